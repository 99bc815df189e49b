"""hostside.converge: the order of a host's steps (check, files, apply, audit), what check mode
runs, and that a failing step leaves the files as they were.  The Redis step is a recording
stand-in here; the real seed and restore steps run in tests/integration."""

from __future__ import annotations

import os

import pytest

from flashmm_deploy.hostside import audit_log
from flashmm_deploy.hostside.converge import RedisStep, converge
from flashmm_deploy.hostside.filesync import SyncError, sync

AUDIT = {"host": "mm-1", "actor": "ops@laptop", "action": "deploy", "run": "r1"}


class Recording(RedisStep):
    def __init__(self, root, *, would_change=True, fail_apply=False):
        self.root, self.would_change, self.fail_apply = root, would_change, fail_apply
        self.calls = []

    def check(self):
        self.calls.append(("check", os.path.exists(self.root / "a.yml")))
        return {"would_change": self.would_change, "changed": False}

    def apply(self, report):
        self.calls.append(("apply", (self.root / "a.yml").read_text()))
        if self.fail_apply:
            raise RuntimeError("redis refused")
        return dict(report, changed=report["would_change"])

    def audit_lines(self, report, audit):
        return [audit_log.entry(audit, "runtime")] if report["changed"] else []


def files(text="a: 1\n"):
    return [{"path": "a.yml", "content": text, "mode": 0o644}]


def test_check_before_the_files_apply_after_them_and_their_lines_last(tmp_path):
    root = tmp_path / "root"
    step = Recording(root)
    done = converge(str(root), files(), redis=step, run_id="r1",
                    audit=dict(AUDIT, root=str(root)))
    assert step.calls == [("check", False), ("apply", "a: 1\n")]
    assert done["redis"]["changed"] and done["files"]["changed_files"] == ["a.yml"]
    lines, _ = audit_log.read(str(root))
    assert [e["change"] for e in lines] == ["file", "runtime"]


def test_check_mode_checks_and_writes_nothing(tmp_path):
    root = tmp_path / "root"
    step = Recording(root)
    done = converge(str(root), files(), check=True, redis=step)
    assert step.calls == [("check", False)]
    assert not root.exists() and done["files"]["changed_files"] == ["a.yml"]


def test_a_failing_check_on_a_new_host_makes_not_even_the_root(tmp_path):
    root = tmp_path / "root"

    class Refusing(Recording):
        def check(self):
            raise RuntimeError("redis down")
    with pytest.raises(RuntimeError):
        converge(str(root), files(), redis=Refusing(root))
    assert not root.exists()


def test_a_failing_apply_puts_the_files_back(tmp_path):
    root = tmp_path / "root"
    converge(str(root), files("a: 1\n"), run_id="r1")
    with pytest.raises(RuntimeError):
        converge(str(root), files("a: 2\n"), redis=Recording(root, fail_apply=True),
                 run_id="r2")
    assert (root / "a.yml").read_text() == "a: 1\n"


def test_redis_only_holds_the_lock_and_refuses_after_another_runs_files(tmp_path):
    root = tmp_path / "root"
    sync(str(root), files(), run_id="r1", record_run=True)
    step = Recording(root)
    converge(str(root), None, redis=step, run_id="r1", audit=dict(AUDIT, root=str(root)))
    assert [c[0] for c in step.calls] == ["check", "apply"]
    assert [e["change"] for e in audit_log.read(str(root))[0]] == ["runtime"]
    sync(str(root), files("a: 3\n"), run_id="r9", record_run=True)     # another run wrote
    with pytest.raises(SyncError, match="another deploy"):
        converge(str(root), None, redis=Recording(root), run_id="r1")
