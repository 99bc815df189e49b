"""host_lock: a run's lease on a host between its module calls, and secret-generation fencing
(in-process: the calls of two runs are made here one after the other, as their processes
would make them)."""

from __future__ import annotations

import json
import time

import pytest

from flashmm_deploy.hostside.filesync import sync
from flashmm_deploy.hostside.host_lock import (GENERATION_FILE, LEASE_FILE, HostLock, SyncError,
                                      check_generation, read_generation, read_lease)


def lease(hold=False, release=False, started_ts=1000.0, stale=(), ttl=600, action="deploy"):
    return {"action": action, "owner": "op@ctl", "started": "2026-12-03T10:00:00Z",
            "started_ts": started_ts, "ttl": ttl, "hold": hold, "release": release,
            "stale_runs": list(stale)}


def spec(path, content, mode=0o644):
    return {"path": path, "content": content, "mode": mode}


def test_a_run_holds_the_host_between_its_calls_and_another_run_waits_naming_it(tmp_path):
    root = str(tmp_path)
    with HostLock(root, "run-a", 0, lease(hold=True)):
        pass
    held = read_lease(root)
    assert held["run_id"] == "run-a" and held["action"] == "deploy" and held["owner"] == "op@ctl"
    # between the run's calls (compose up runs now), a backup of another run must wait
    with pytest.raises(SyncError) as err:
        with HostLock(root, "backup-b", 0.3, lease(started_ts=5000.0)):
            pass
    message = str(err.value)
    assert "held by deploy run run-a by op@ctl, since 2026-12-03T10:00:00Z" in message
    assert "waited 0.3s (flashmm_lock_timeout)" in message
    assert "flashmm_lock_break=run-a" in message
    # the run's own later call goes through and its last call ends the lease
    with HostLock(root, "run-a", 0, lease(release=True)):
        pass
    assert read_lease(root) == {}
    with HostLock(root, "backup-b", 0.3, lease(started_ts=5000.0)):
        pass


def test_a_held_lease_keeps_its_start_and_moves_its_expiry(tmp_path):
    root = str(tmp_path)
    with HostLock(root, "run-a", 0, lease(hold=True, ttl=100)):
        pass
    first = read_lease(root)
    time.sleep(0.05)
    with HostLock(root, "run-a", 0, lease(hold=True, ttl=100)):
        pass
    again = read_lease(root)
    assert again["started"] == first["started"] and again["expires"] > first["expires"]


def test_a_failed_call_ends_its_runs_lease(tmp_path):
    root = str(tmp_path)
    with pytest.raises(RuntimeError):
        with HostLock(root, "run-a", 0, lease(hold=True)):
            raise RuntimeError("the write failed")
    assert read_lease(root) == {}


def test_the_lease_of_a_dead_run_is_broken_and_reported(tmp_path):
    root = str(tmp_path)
    with HostLock(root, "run-dead", 0, lease(hold=True)):
        pass
    lock = HostLock(root, "run-b", 0, lease(hold=True, started_ts=9000.0, stale=["run-dead"]))
    with lock:
        pass
    assert lock.broken["run_id"] == "run-dead" and lock.broken["reason"] == "run ended"
    assert read_lease(root)["run_id"] == "run-b"


def test_an_expired_lease_is_taken_over(tmp_path):
    root = str(tmp_path)
    (tmp_path / ".flashmm").mkdir()
    (tmp_path / LEASE_FILE).write_text(json.dumps(
        {"run_id": "elsewhere", "action": "deploy", "expires": time.time() - 1}))
    lock = HostLock(root, "run-b", 0, lease(hold=True))
    with lock:
        pass
    assert lock.broken["reason"] == "expired" and read_lease(root)["run_id"] == "run-b"


def test_a_lease_without_an_expiry_counts_as_expired(tmp_path):
    (tmp_path / ".flashmm").mkdir()
    (tmp_path / LEASE_FILE).write_text('{"run_id": "odd"}')
    with HostLock(str(tmp_path), "run-b", 0, lease(hold=True)):
        pass
    assert read_lease(str(tmp_path))["run_id"] == "run-b"


def test_of_two_runs_started_together_the_younger_stops_at_once(tmp_path):
    root = str(tmp_path)
    with HostLock(root, "older", 0, lease(hold=True, started_ts=1000.0)):
        pass
    began = time.monotonic()
    with pytest.raises(SyncError, match="stopped at once: that run started together"):
        with HostLock(root, "younger", 30, lease(hold=True, started_ts=1002.0)):
            pass
    assert time.monotonic() - began < 10        # not the 30 s timeout (no speed claim)


def test_an_older_run_waits_for_a_younger_one(tmp_path):
    root = str(tmp_path)
    with HostLock(root, "younger", 0, lease(hold=True, started_ts=1002.0)):
        pass
    with pytest.raises(SyncError, match=r"waited 0.2s"):
        with HostLock(root, "older", 0.2, lease(hold=True, started_ts=1000.0)):
            pass


def test_a_run_started_later_waits_rather_than_stopping(tmp_path):
    root = str(tmp_path)
    with HostLock(root, "first", 0, lease(hold=True, started_ts=1000.0)):
        pass
    with pytest.raises(SyncError, match=r"waited 0.2s"):
        with HostLock(root, "much-later", 0.2, lease(hold=True, started_ts=1100.0)):
            pass


# ---- secret generations ---------------------------------------------------------------------

GEN1 = {"number": 1796300000, "id": "rotation r1 redis: begin", "at": "2026-12-03T10:00:00Z"}
GEN2 = {"number": 1796300100, "id": "rotation r1 redis: finish", "at": "2026-12-03T10:01:40Z"}


def test_a_run_records_its_generation_with_the_files_and_an_older_vault_is_refused(tmp_path):
    root = str(tmp_path)
    result = sync(root, [spec("a.yml", "x\n")], run_id="r1", generation=GEN2)
    assert result["changed"] and read_generation(root) == GEN2
    assert (tmp_path / GENERATION_FILE).stat().st_mode & 0o777 == 0o600
    # a checkout from before the rotation: refused, nothing written
    with pytest.raises(SyncError) as err:
        sync(root, [spec("a.yml", "old\n")], run_id="r2", generation=GEN1)
    assert "vault in this checkout is older" in str(err.value)
    assert "rotation r1 redis: finish" in str(err.value) and "git pull" in str(err.value)
    assert (tmp_path / "a.yml").read_text() == "x\n" and read_generation(root) == GEN2
    # check mode says the same
    with pytest.raises(SyncError, match="older"):
        sync(root, [spec("a.yml", "old\n")], check=True, generation=GEN1)
    # the same generation again: nothing to record
    assert sync(root, [spec("a.yml", "x\n")], run_id="r3", generation=GEN2)["changed"] is False


def test_the_same_number_from_another_history_is_refused(tmp_path):
    root = str(tmp_path)
    sync(root, [spec("a.yml", "x\n")], generation=GEN1)
    with pytest.raises(SyncError, match="older"):
        check_generation(root, dict(GEN1, id="restore 42: secrets"))


def test_vaults_and_hosts_from_before_generations_record_nothing(tmp_path):
    root = str(tmp_path)
    none = {"number": 0, "id": "none", "at": ""}
    sync(root, [spec("a.yml", "x\n")], generation=none)
    assert read_generation(root) == {}
    assert sync(root, [spec("a.yml", "x\n")], generation=none)["changed"] is False
    # a host that ran a generation refuses a vault without one
    sync(root, [spec("a.yml", "x\n")], generation=GEN1)
    with pytest.raises(SyncError, match="older"):
        sync(root, [spec("a.yml", "x\n")], generation=none)


def test_a_failed_write_puts_the_previous_generation_back(tmp_path):
    root = str(tmp_path)
    sync(root, [spec("a.yml", "x\n")], generation=GEN1)

    def seed_fails():
        raise RuntimeError("redis went away")

    with pytest.raises(RuntimeError):
        sync(root, [spec("a.yml", "y\n")], generation=GEN2, after_write=seed_fails)
    assert read_generation(root) == GEN1 and (tmp_path / "a.yml").read_text() == "x\n"


@pytest.mark.parametrize("record", ['{"number": "x"}', '{"number": true}', '{"number": -1}',
                                    '{"id": "no number"}'])
def test_a_corrupt_generation_record_refuses_with_a_clear_message(tmp_path, record):
    (tmp_path / ".flashmm").mkdir()
    (tmp_path / GENERATION_FILE).write_text(record)
    with pytest.raises(SyncError, match="unreadable .*generation.json .remove it"):
        check_generation(str(tmp_path), GEN2)
