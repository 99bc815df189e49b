"""drift.report over the results deploy's check-mode steps register (the playbook and the real
stack: tests/integration/test_drift.py)."""

from __future__ import annotations

from flashmm_deploy.reports import drift

CLEAN = {"files": {"changed_files": [], "removed_files": [], "files": {"a": "unchanged"}},
         "stack": {"containers": {"flashmm": {"action": "none", "reasons": []}}},
         "runtime": {"changed_keys": [], "drift": {}}}


def test_clean_hosts_exit_0_and_a_host_without_a_stack_is_clean_too():
    rep = drift.report({"a": CLEAN, "b": {"files": dict(CLEAN["files"], runtime={
        "changed_keys": [], "drift": {}})}})
    assert rep["exit"] == 0 and rep["summary"] == "2 clean"
    assert [h["status"] for h in rep["hosts"].values()] == ["clean", "clean"]


def test_every_kind_of_difference_is_counted_and_shown():
    results = {
        "files": {"changed_files": ["x.yml", "old.txt"], "removed_files": ["old.txt"],
                  "files": {"x.yml": "mode"}, "extra_files": ["notes.txt"]},
        "stack": {"containers": {"flashmm": {"action": "start", "reasons": ["stopped"]},
                                 "redis": {"action": "none"}}},
        "runtime": {"changed_keys": ["flashmm:config:a:b", "flashmm:config:c:d"],
                    "drift": {"flashmm:config:a:b": {"runtime": "2.5", "inventory": "1.0",
                                                     "by": "alice@desk", "at": 1796300000}},
                    "unknown": ["flashmm:config:trading:max_positon_usdc"]}}
    rep = drift.report({"h": results})
    h = rep["hosts"]["h"]
    assert rep["exit"] == 1 and h["status"] == "drift" and h["count"] == 7
    assert h["files"] == {"x.yml": "mode", "old.txt": "removed", "notes.txt": "extra"}
    assert h["runtime"] == {"flashmm:config:a:b": {"state": "override", "runtime": "2.5",
                                                   "inventory": "1.0", "by": "alice@desk",
                                                   "at": "2026-12-03T12:13:20Z"},
                            "flashmm:config:c:d": {"state": "unseeded"},
                            "flashmm:config:trading:max_positon_usdc": {"state": "unknown"}}
    assert h["containers"] == {"flashmm": {"action": "start", "reasons": ["stopped"]}}
    assert rep["table"].splitlines() == [
        "h: drift (7 difference(s))", "  file notes.txt: extra", "  file old.txt: removed",
        "  file x.yml: mode",
        "  redis flashmm:config:a:b: override: live 2.5, inventory 1.0 "
        "(set by alice@desk at 2026-12-03T12:13:20Z)",
        "  redis flashmm:config:c:d: unseeded",
        "  redis flashmm:config:trading:max_positon_usdc: unknown",
        "  container flashmm: would start (stopped)"]


def test_a_step_that_could_not_look_is_failed_and_unreachable_wins():
    failed = dict(CLEAN, runtime={"failed": False, "msg": "cannot connect to redis"})
    rep = drift.report({"a": failed, "b": {"files": {"unreachable": True, "msg": "ssh: x"}},
                        "c": CLEAN})
    assert rep["hosts"]["a"]["status"] == "failed"
    assert rep["hosts"]["a"]["errors"] == ["runtime: cannot connect to redis"]
    assert rep["hosts"]["b"]["status"] == "unreachable"
    assert rep["exit"] == 2 and rep["summary"] == "1 clean, 1 failed, 1 unreachable"


def test_skipped_or_absent_steps_are_not_differences():
    rep = drift.report({"h": {"files": CLEAN["files"], "stack": {"skipped": True}}})
    assert rep["hosts"]["h"]["status"] == "clean"


def test_the_app_state_says_stopped_and_out_of_date_together():
    def app(**c):
        return drift.report({"h": dict(CLEAN, stack={"containers": {"flashmm": c}})})[
            "hosts"]["h"]["app"]
    assert app(action="none", status="running") == "running"
    assert app(action="start", status="exited") == "exited"
    assert app(action="recreate", status="exited") == "exited, out of date"
    assert app(action="create") == "missing"


def test_status_lines_name_version_last_run_app_drift_rotation_and_backup():
    from flashmm_deploy.cli.drift import status_lines

    rep = drift.report({"h": dict(CLEAN, runtime={"changed_keys": [], "drift": {}, "version": 7},
                                  files=dict(CLEAN["files"], last_write={
                                      "written_at": "2026-12-01T10:00:00Z", "owner": "ops@c",
                                      "action": "deploy", "commit": "a" * 40}))})
    now = 1796119200.0 + 3 * 3600            # 2026-12-01T10:00:00Z + 3 h
    [line] = status_lines(rep, rotations=["redis (rotation 2026-12-01.1)"],
                          backup=("20261201-1", "2026-12-01T09:00:00Z"), now=now)
    assert line == ("h | clean | version 7 | written 2026-12-01T10:00:00Z (3 h ago) by ops@c "
                    "(deploy, toolkit aaaaaaaaaaaa) | app running | drift 0 | rotation redis "
                    "(rotation 2026-12-01.1) | backup 20261201-1 (4 h ago)")
