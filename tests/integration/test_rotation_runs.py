"""A rotation run as a whole, against the real stack (one host, the stand-in app, a
password-protected Redis): how often the app restarts, and what a killed run leaves behind
(issue 14 case 6).  The tests share one stack and run in file order; each leaves it healthy
and every rotation finished."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
from dotenv import dotenv_values

from stack_support import APP_USER, AppIdentities, Stack, ok
from support import ROOT, VENV_BIN, ansible_playbook, read_vault

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(docker_engine, tmp_path_factory):
    s = Stack(docker_engine, tmp_path_factory.mktemp("rotation-runs"), hosts=1, label="rotrun")
    try:
        ok(s.deploy())
        yield s
    finally:
        s.down()


def rotate(stack: Stack, kind: str, *args: str) -> subprocess.CompletedProcess:
    return ansible_playbook("playbooks/rotate_secrets.yml", stack.inventory, "-e",
                            f"rotate={kind}", *args, env=stack.env)


def stop_files(stack: Stack, host: str) -> list[str]:
    return sorted(p.name for p in (stack.root(host) / ".flashmm").glob("watch-*"))


def test_a_redis_rotation_restarts_the_app_once(stack):
    host = stack.hosts[0]
    old = stack.password()
    with AppIdentities(stack, host) as seen:
        proc = rotate(stack, "redis")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    app, redis_ = seen.restarts("flashmm"), seen.restarts("redis")
    print(f"redis rotation: app recreated {app} time(s), Redis {redis_}")
    assert (app, redis_) == (1, 0)
    new = stack.password()
    env = dotenv_values(stack.root(host) / ".env")
    assert env["REDIS_PASSWORD"] == new != old and env["REDIS_PASSWORD_PREVIOUS"] == ""
    assert stack.raw_redis(host, ["AUTH", APP_USER, old])[0].startswith(b"-WRONGPASS")
    assert stack.raw_redis(host, ["AUTH", APP_USER, new])[0] == b"+OK"
    assert stop_files(stack, host) == []
    stack.wait_health(host)


def _watchers(tag: str) -> dict[int, str]:
    """pid -> command line of every process running the flashmm_health_watch module (the
    detached watcher is a fork of the module's process) for the run whose environment holds
    ``tag`` (a local connection passes the run's environment on; other runs on this machine
    are not ours)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8",
                                                                                  "replace")
            if "flashmm_health_watch" not in cmdline:
                continue
            if f"FLASHMM_TEST_RUN={tag}".encode() not in (entry / "environ").read_bytes():
                continue
        except OSError:
            continue
        found[int(entry.name)] = cmdline
    return {pid: cmd for pid, cmd in found.items() if _running([pid])}


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def _running(pids) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


def test_a_killed_rotation_leaves_no_watcher_and_no_stop_file(stack, tmp_path):
    host = stack.hosts[0]
    tag = secrets.token_hex(8)
    log = (tmp_path / "rotation.log").open("w")
    run = subprocess.Popen(
        [str(VENV_BIN / "ansible-playbook"), str(ROOT / "playbooks/rotate_secrets.yml"), "-i",
         str(stack.inventory), "-e", "rotate=generated"],
        cwd=ROOT, env={**stack.env, "FLASHMM_TEST_RUN": tag}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # bounded: the watcher starts with the roll, and detaches (a session of its own)
        deadline = time.monotonic() + 300

        def detached() -> list[int]:
            return [p for p in _watchers(tag) if _session(p) not in (None, run.pid)]
        # what one scan saw is what counts: a second scan of /proc (slow on a loaded machine)
        # could come after the watcher's roll ended, and fail a run that did what it should
        seen: list[int] = []
        while not seen and run.poll() is None and time.monotonic() < deadline:
            seen = detached()
            if not seen:
                time.sleep(0.05)
        assert seen, "no watcher seen while the rotation ran"
        assert run.poll() is None, "the rotation finished before it could be killed"
    finally:
        os.killpg(run.pid, signal.SIGKILL)         # the run and its workers, as kill -9 would
        run.wait()
        log.close()
    deadline = time.monotonic() + 60               # bounded wait, far below max_seconds (300)
    while _watchers(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _watchers(tag)
    assert stop_files(stack, host) == []
    rolling = read_vault(stack.vault_path)["flashmm_rotations"]["generated"]
    assert rolling["state"] == "rolling"

    # the next run resumes the killed rotation and leaves no stop file either
    resumed = rotate(stack, "generated")
    assert resumed.returncode == 0, resumed.stdout[-5000:] + resumed.stderr[-2000:]
    assert f"generated: resuming rotation {rolling['id']}" in " ".join(resumed.stdout.split())
    assert read_vault(stack.vault_path)["flashmm_rotations"]["generated"] == \
        {"id": rolling["id"], "state": "done"}
    assert stop_files(stack, host) == []
    stack.wait_health(host)
