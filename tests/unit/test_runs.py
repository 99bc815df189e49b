"""runs: the controller's registry of its runs, and which of them are gone."""

from __future__ import annotations

import json
import os
import time

from flashmm_deploy.plan import runs


def test_a_live_run_is_not_stale_and_a_gone_or_reused_pid_is(tmp_path):
    me = runs.start("live", "deploy", pid=os.getpid(), directory=tmp_path)
    assert me["action"] == "deploy" and "@" in me["owner"] and me["stale_runs"] == []
    (tmp_path / "gone.json").write_text(json.dumps({"pid": 2 ** 22 + 12345, "time": time.time()}))
    (tmp_path / "reused.json").write_text(json.dumps(
        {"pid": os.getpid(), "start": "not-this-process", "time": time.time()}))
    assert runs.stale_runs(tmp_path) == ["gone", "reused"]
    # a new run is told which leases it may break, and those an operator named
    other = runs.start("next", "rotation", pid=os.getpid(), directory=tmp_path,
                       breaks={"abc123"})
    assert other["stale_runs"] == ["abc123", "gone", "reused"]


def test_records_of_long_gone_runs_are_dropped(tmp_path):
    old = time.time() - runs.KEEP_SECONDS - 10
    (tmp_path / "ancient.json").write_text(json.dumps({"pid": 2 ** 22 + 1, "time": old}))
    (tmp_path / "junk.json").write_text("{not json")
    assert runs.stale_runs(tmp_path) == ["ancient"]
    assert not (tmp_path / "ancient.json").exists() and (tmp_path / "junk.json").exists()


def test_the_lease_option_of_a_call(tmp_path):
    plan = {"lease": runs.start("r1", "deploy", pid=os.getpid(), directory=tmp_path)}
    args = runs.lease_args(plan, {"lease_ttl": 120}, hold=True, release=False)
    assert args["ttl"] == 120.0 and args["hold"] and not args["release"]
    assert args["started_ts"] == plan["lease"]["started_ts"]
    assert runs.lease_args({}, {}, hold=True, release=False) is None


def test_toolkit_commit_reads_loose_packed_and_detached_heads(tmp_path):
    from flashmm_deploy.plan.runs import toolkit_commit

    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text("# pack-refs\n" + "b" * 40 + " refs/heads/main\n")
    assert toolkit_commit(tmp_path) == "b" * 40
    (git / "refs" / "heads" / "main").write_text("c" * 40 + "\n")
    assert toolkit_commit(tmp_path) == "c" * 40
    (git / "HEAD").write_text("d" * 40 + "\n")
    assert toolkit_commit(tmp_path) == "d" * 40
    (git / "HEAD").write_text("not a commit\n")
    assert toolkit_commit(tmp_path) is None
    assert toolkit_commit(tmp_path / "elsewhere") is None
