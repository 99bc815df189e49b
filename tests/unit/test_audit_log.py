"""The host's audit trail (``audit_log``) and the lines ``filesync`` writes to it."""

from __future__ import annotations

import json
import os
import stat

import pytest

from flashmm_deploy.hostside import audit_log
from flashmm_deploy.hostside.filesync import sync

CONTEXT = {"root": None, "host": "mm-1", "actor": "ops@laptop", "action": "deploy",
           "run": "abc123", "commit": None, "max_bytes": 1 << 20, "keep": 2}


def lines_of(root) -> list[dict]:
    entries, bad = audit_log.read(str(root))
    assert bad == 0
    return entries


def test_off_writes_nothing(tmp_path):
    assert audit_log.append(str(tmp_path), None, [{"change": "file"}]) == 0
    assert not (tmp_path / audit_log.AUDIT_FILE).exists()


def test_a_line_names_the_run_and_the_change_and_the_file_is_private(tmp_path):
    audit = dict(CONTEXT, root=str(tmp_path))
    audit_log.append(str(tmp_path), audit, [audit_log.entry(audit, "file", file=".env",
                                                            state="updated", keys=["A"])])
    (line,) = lines_of(tmp_path)
    assert {k: line[k] for k in ("host", "actor", "action", "run", "change", "file", "keys")} \
        == {"host": "mm-1", "actor": "ops@laptop", "action": "deploy", "run": "abc123",
            "change": "file", "file": ".env", "keys": ["A"]}
    assert "commit" not in line                 # unknown: left out, not null
    assert line["time"].endswith("Z")
    path = tmp_path / audit_log.AUDIT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_loosened_mode_is_put_back_and_lines_are_only_appended(tmp_path):
    audit = dict(CONTEXT, root=str(tmp_path))
    audit_log.append(str(tmp_path), audit, [audit_log.entry(audit, "one")])
    path = tmp_path / audit_log.AUDIT_FILE
    os.chmod(path, 0o644)
    audit_log.append(str(tmp_path), audit, [audit_log.entry(audit, "two")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [e["change"] for e in lines_of(tmp_path)] == ["one", "two"]


def test_rotated_by_size_keeping_the_newest_files(tmp_path):
    audit = dict(CONTEXT, root=str(tmp_path), max_bytes=4096, keep=2)
    for n in range(200):            # ~150 bytes a line: several rotations
        audit_log.append(str(tmp_path), audit, [audit_log.entry(audit, "file", n=n)])
    base = tmp_path / audit_log.AUDIT_FILE
    assert base.stat().st_size <= 4096
    assert (tmp_path / (audit_log.AUDIT_FILE + ".2")).exists()
    assert not (tmp_path / (audit_log.AUDIT_FILE + ".3")).exists()
    numbers = [e["n"] for e in lines_of(tmp_path)]
    assert numbers == sorted(numbers) and numbers[-1] == 199     # oldest first, none torn
    assert numbers == list(range(numbers[0], 200))               # nothing lost in between


def test_a_torn_line_is_counted_not_fatal(tmp_path):
    audit = dict(CONTEXT, root=str(tmp_path))
    audit_log.append(str(tmp_path), audit, [audit_log.entry(audit, "one")])
    with open(tmp_path / audit_log.AUDIT_FILE, "ab") as fh:
        fh.write(b'{"change": "tor')     # a full disk mid-line
    entries, bad = audit_log.read(str(tmp_path))
    assert [e["change"] for e in entries] == ["one"] and bad == 1


def test_many_names_are_capped_with_their_count():
    out = audit_log.names(f"k{i:05d}" for i in range(10_000))
    assert len(out["keys"]) == audit_log.MAX_NAMES and out["keys_total"] == 10_000


def test_a_seed_line_has_the_versions_before_and_after():
    (line,) = audit_log.runtime_lines(CONTEXT, {"changed": True, "version": 8,
                                                "changed_keys": ["flashmm:config:a:b"],
                                                "enforced": {"flashmm:config:a:b": {}}})
    assert line["version"] == [7, 8] and line["keys"] == ["flashmm:config:a:b"]
    assert line["enforced"] == ["flashmm:config:a:b"]
    assert audit_log.runtime_lines(CONTEXT, {"changed": False, "version": 8}) == []
    assert audit_log.runtime_lines(None, {"changed": True, "version": 8}) == []


SECRET = "s3cr3t-'\"$`\\!%{{x}}-VALUE"


def env_file(secret: str) -> dict:
    return {"path": ".env", "content": f"APP_ENV=testnet\nAPI_SECRET={secret}\n",
            "mode": 0o600, "mask": "env", "mask_keys": ["API_SECRET"]}


def test_a_changed_secret_logs_its_name_never_its_value(tmp_path):
    root = tmp_path / "root"
    audit = dict(CONTEXT, root=str(root))
    files = [{"path": "config.yml", "content": "a: 1\n", "mode": 0o644}]
    sync(str(root), files + [env_file("old-value")], audit=audit)
    sync(str(root), files + [env_file(SECRET)], audit=audit)
    sync(str(root), files + [env_file(SECRET)], audit=audit)       # unchanged: no line
    raw = (root / audit_log.AUDIT_FILE).read_text()
    assert SECRET not in raw and "old-value" not in raw
    first, *rest = lines_of(root)
    assert [(e["file"], e["state"]) for e in [first, *rest]] == [
        (".env", "created"), ("config.yml", "created"), (".env", "updated")]
    assert first["keys"] == ["API_SECRET", "APP_ENV"]
    assert rest[-1]["keys"] == ["API_SECRET"]


def test_check_mode_and_a_failed_write_log_nothing(tmp_path):
    root = tmp_path / "root"
    audit = dict(CONTEXT, root=str(root))
    files = [{"path": "config.yml", "content": "a: 1\n", "mode": 0o644}]
    sync(str(root), files, audit=audit, check=True)
    assert not (root / audit_log.AUDIT_FILE).exists()

    def seed_fails():
        raise RuntimeError("redis down")
    with pytest.raises(RuntimeError):
        sync(str(root), files, audit=audit, after_write=seed_fails)
    assert not (root / "config.yml").exists()
    assert not (root / audit_log.AUDIT_FILE).exists()


def test_an_unwritable_log_puts_the_files_back(tmp_path):
    root = tmp_path / "root"
    audit = dict(CONTEXT, root=str(root))
    sync(str(root), [{"path": "config.yml", "content": "a: 1\n", "mode": 0o644}], audit=audit)
    log = root / audit_log.AUDIT_FILE
    log.unlink()
    log.mkdir()                     # appending to it fails as a full or broken disk would
    with pytest.raises(OSError):
        sync(str(root), [{"path": "config.yml", "content": "a: 2\n", "mode": 0o644}],
             audit=audit)
    assert (root / "config.yml").read_text() == "a: 1\n"


def test_the_seed_lines_follow_the_files_lines(tmp_path):
    root = tmp_path / "root"
    audit = dict(CONTEXT, root=str(root))
    sync(str(root), [{"path": "redis/seed.lua", "content": "x", "mode": 0o644}], audit=audit,
         after_write=lambda: audit_log.runtime_lines(audit, {"changed": True, "version": 3,
                                                             "changed_keys": ["k"]}))
    assert [e["change"] for e in lines_of(root)] == ["file", "runtime"]
    json.dumps(lines_of(root))


def test_the_report_merges_hosts_in_time_order_and_names_an_unreachable_one():
    from flashmm_deploy.reports import audit_report

    a = {"entries": [{"time": "2026-12-03T10:00:02.000Z", "change": "file", "file": ".env",
                      "keys": ["X"], "actor": "ops@l", "action": "deploy"}],
         "truncated": 0, "unreadable": 0}
    b = {"entries": [{"time": "2026-12-03T10:00:01.000Z", "change": "runtime set",
                      "key": "trading.max_position_usdc", "version": [3, 4]}]}
    report = audit_report.report({"mm-1": a, "mm-2": b,
                                  "mm-3": {"unreachable": True, "msg": "ssh: refused"}})
    assert [e["host"] for e in report["entries"]] == ["mm-2", "mm-1"]
    assert report["exit"] == 2 and report["problems"] == ["mm-3: unreachable: ssh: refused"]
    table = report["table"].splitlines()
    assert "version=3->4" in table[0] and "keys=X" in table[1]
    assert table[-1] == "! mm-3: unreachable: ssh: refused"
    assert audit_report.report({"mm-1": a})["exit"] == 0


def test_check_mode_lists_the_files_no_run_wrote(tmp_path):
    root = tmp_path / "root"
    files = [{"path": "config/a.yml", "content": "a: 1\n", "mode": 0o644}]
    sync(str(root), files)
    (root / "config" / "notes.txt").write_text("by hand")
    (root / "stray.sh").write_text("#!/bin/sh")
    result = sync(str(root), files, check=True)
    assert result["extra_files"] == ["config/notes.txt", "stray.sh"]   # not .flashmm/
    assert "extra_files" not in sync(str(root), files)


class ListConn:
    """What take_over_runtime calls: LRANGE of the audit list (newest first)."""

    def __init__(self, items):
        self.items = items

    def call(self, *args):
        assert args[:2] == ("LRANGE", audit_log.RUNTIME_LIST)
        return [json.dumps(i).encode() for i in self.items]


def runtime_set(version: int, key: str = "trading.max_position_usdc") -> dict:
    return {"time": 1796300000 + version, "actor": "alice@desk", "change": "runtime set",
            "key": key, "version": [version - 1, version]}


def test_runtime_sets_are_copied_once_and_again_after_redis_started_over(tmp_path):
    audit = dict(CONTEXT, root=str(tmp_path))
    assert audit_log.take_over_runtime(ListConn([runtime_set(5), runtime_set(4)]),
                                       str(tmp_path), audit) == 2
    assert audit_log.take_over_runtime(ListConn([runtime_set(6), runtime_set(5),
                                                 runtime_set(4)]), str(tmp_path), audit) == 1
    assert audit_log.take_over_runtime(ListConn([runtime_set(6)]), str(tmp_path), audit) == 0
    # a Redis that started over (its versions below the mark): its list is new
    assert audit_log.take_over_runtime(ListConn([runtime_set(2), runtime_set(1)]),
                                       str(tmp_path), audit) == 2
    lines = lines_of(tmp_path)
    assert [e["version"][1] for e in lines] == [4, 5, 6, 1, 2]
    assert {(e["host"], e["actor"], e["change"]) for e in lines} == {
        ("mm-1", "alice@desk", "runtime set")}     # the set's actor, not the copying run's
    assert not any("run" in e or "action" in e for e in lines)
    assert lines[0]["time"] == "2026-12-03T12:13:24.000Z"


def test_a_read_over_its_budget_keeps_the_newest_lines(tmp_path):
    audit = dict(CONTEXT, root=str(tmp_path), max_bytes=4096, keep=5)
    for n in range(200):
        audit_log.append(str(tmp_path), audit, [audit_log.entry(audit, "file", n=n)])
    entries, bad = audit_log.read(str(tmp_path), max_bytes=6000)
    numbers = [e["n"] for e in entries]
    assert bad == 0 and numbers[-1] == 199 and numbers == list(range(numbers[0], 200))
    assert 0 < len(numbers) < 200


def test_two_runs_copying_the_runtime_sets_at_once_copy_each_once(tmp_path):
    import threading
    import time

    audit = dict(CONTEXT, root=str(tmp_path))
    both_read = threading.Barrier(2)

    class SlowList(ListConn):
        def call(self, *args):
            out = super().call(*args)
            both_read.wait(timeout=10)      # each run has read the list before either writes
            time.sleep(0.05)
            return out

    counts = []
    threads = [threading.Thread(target=lambda: counts.append(audit_log.take_over_runtime(
        SlowList([runtime_set(2), runtime_set(1)]), str(tmp_path), audit))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert sorted(counts) == [0, 2]
    assert [e["version"][1] for e in lines_of(tmp_path)] == [1, 2]
