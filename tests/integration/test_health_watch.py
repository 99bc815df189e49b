"""The rotation's /health watcher (src/flashmm_deploy/hostside/health_watch.py) for real: a
forked, detached watcher polling an HTTP server on 127.0.0.1 whose answer the test flips,
then stopped and collected.  (Inside a whole rotation: test_rotation*.py.)"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flashmm_deploy.hostside import health_watch
from flashmm_deploy.hostside.process_owner import alive, identity
from support import ROOT

pytestmark = pytest.mark.integration


class App(http.server.ThreadingHTTPServer):
    """/health answers 200 while ``up``, 503 otherwise."""
    up = True


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):                   # noqa: N802 (http.server's name)
        self.send_response(200 if self.server.up else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):       # quiet
        pass


@pytest.fixture
def app():
    server = App(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/health"
    yield server
    server.shutdown()
    server.server_close()


def wait_until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_an_outage_is_measured_and_nothing_is_left_behind(app, tmp_path):
    stop = str(tmp_path / "watch-run1.stop")
    watcher = health_watch.start(app.url, stop, interval=0.02, max_seconds=60)
    assert alive(watcher) is True
    session = int(Path(f"/proc/{watcher['pid']}/stat").read_text().rsplit(")", 1)[1].split()[3])
    assert session == watcher["pid"] != os.getsid(0)           # a session of its own
    time.sleep(0.2)
    app.up = False
    time.sleep(0.4)
    app.up = True
    time.sleep(0.2)
    result = health_watch.collect(stop, watcher)
    assert result["stopped_by"] == "stop_file"
    assert 0.3 <= result["unavailable_seconds"] <= 2.0, result
    assert result["failed_polls"] >= 1 and result["polls"] > result["failed_polls"]
    assert result["healthy_at_end"] is True
    assert left(tmp_path) == []
    assert wait_until(lambda: alive(watcher) is False)


def test_start_returns_at_once_holding_no_pipe_of_its_caller(app, tmp_path):
    """A module call over SSH (or the local connection) ends when its output pipe closes: the
    watcher must not hold it, or every roll would wait for the watcher to end."""
    stop = str(tmp_path / "watch-run2.stop")
    code = ("import sys, json; from flashmm_deploy.hostside import health_watch as w; "
            f"print(json.dumps(w.start({app.url!r}, {stop!r}, max_seconds=60)))")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=20, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10
    watcher = json.loads(proc.stdout)
    assert alive(watcher) is True                   # still watching after its caller ended
    assert health_watch.collect(stop, watcher)["stopped_by"] == "stop_file"
    assert left(tmp_path) == []


def test_a_watcher_whose_run_is_gone_ends_and_leaves_no_file(app, tmp_path):
    run = subprocess.Popen(["sleep", "60"])
    try:
        stop = str(tmp_path / "watch-run3.stop")
        watcher = health_watch.start(app.url, stop, interval=0.02, max_seconds=60,
                                     owner=identity(run.pid))
        assert alive(watcher) is True
    finally:
        run.kill()
        run.wait()
    assert wait_until(lambda: alive(watcher) is False, seconds=10)
    assert left(tmp_path) == []


def test_a_watcher_past_max_seconds_is_collected_and_its_files_removed(app, tmp_path):
    stop = str(tmp_path / "watch-run4.stop")
    watcher = health_watch.start(app.url, stop, interval=0.02, max_seconds=0.2)
    assert wait_until(lambda: alive(watcher) is False)
    result = health_watch.collect(stop, watcher)
    assert result["stopped_by"] == "max_seconds" and result["unavailable_seconds"] == 0
    assert left(tmp_path) == []


def test_a_killed_watcher_is_reported_lost_without_waiting(app, tmp_path):
    stop = str(tmp_path / "watch-run5.stop")
    watcher = health_watch.start(app.url, stop, interval=0.02, max_seconds=60)
    os.kill(watcher["pid"], signal.SIGKILL)
    assert wait_until(lambda: alive(watcher) is False)
    started = time.monotonic()
    assert health_watch.collect(stop, watcher, wait_seconds=20) == {"stopped_by": "lost"}
    assert time.monotonic() - started < 5
    assert left(tmp_path) == []


def test_starting_removes_files_of_earlier_watchers_older_than_an_hour(app, tmp_path):
    old = [tmp_path / "watch-old.stop", tmp_path / "watch-old.result"]
    recent = tmp_path / "watch-recent.stop"
    other = tmp_path / "state.json"
    for path in (*old, recent, other):
        path.write_text("")
    hours_ago = time.time() - 7200
    for path in (*old, other):
        os.utime(path, (hours_ago, hours_ago))
    stop = str(tmp_path / "watch-run6.stop")
    watcher = health_watch.start(app.url, stop, interval=0.02, max_seconds=60)
    assert health_watch.collect(stop, watcher)["stopped_by"] == "stop_file"
    assert left(tmp_path) == ["state.json", "watch-recent.stop"]
