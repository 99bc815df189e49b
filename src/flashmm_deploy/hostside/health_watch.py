"""The /health watcher of a secret rotation's roll: how long the app answered anything but 200
while its host rolled.  Two module calls per roll (library/flashmm_health_watch.py):

- ``start`` forks a detached watcher (a session of its own, no inherited descriptors, so an SSH
  session or the local connection does not wait for it) and returns at once;
- ``collect`` creates the stop file, waits for the watcher's result file, and returns what it
  measured; both files are gone afterwards.

The watcher polls ``url`` until it sees the stop file (which it removes), its run's controller
process is gone (``process_owner``: it then leaves no file behind, nobody will collect), or
``max_seconds`` pass.  This replaces Ansible's ``async`` + ``async_status``: one process per
call instead of the async wrapper, the module and a status call per poll.

Stdlib only, no relative imports: shipped to hosts as ``module_utils/flashmm_health_watch.py``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

try:
    from flashmm_deploy.hostside.atomic_write import write_atomic
    from flashmm_deploy.hostside.process_owner import alive, identity
except ImportError:                                     # on a target host, through Ansible
    from ansible.module_utils.flashmm_atomic_write import write_atomic  # type: ignore[no-redef]
    from ansible.module_utils.flashmm_process_owner import (  # type: ignore[no-redef]
        alive, identity)

OWNER_CHECK_SECONDS = 0.5
STALE_SECONDS = 3600
RESULT_SUFFIX = ".result"


def result_path(stop_file: str) -> str:
    """The file the watcher of ``stop_file`` leaves its measurement in."""
    return os.path.splitext(stop_file)[0] + RESULT_SUFFIX


def healthy(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def remove_stale_files(stop_file: str, older_than: float = STALE_SECONDS) -> None:
    """Stop and result files of earlier watchers in the same directory, older than an hour: a
    run that stopped a watcher which had already ended, or one killed before it collected."""
    directory = os.path.dirname(stop_file) or "."
    suffixes = (os.path.splitext(stop_file)[1], RESULT_SUFFIX)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        path = os.path.join(directory, name)
        try:
            if (name.endswith(suffixes) and path not in (stop_file, result_path(stop_file))
                    and time.time() - os.stat(path).st_mtime > older_than):
                os.unlink(path)
        except OSError:
            pass


def _consume(path: str) -> bool:
    """Whether ``path`` was there; removed when it was."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def watch(url: str, stop_file: str, interval: float, max_seconds: float,
          owner: dict | None = None) -> dict:
    """Poll until stopped; the measurement and why it stopped (``stopped_by``)."""
    polls = failed = 0
    longest = total = 0.0
    down_since = None
    ok = False
    started = last_owner_check = time.monotonic()
    while True:
        now = time.monotonic()
        ok = healthy(url, timeout=max(interval * 4, 0.5))
        polls += 1
        if ok and down_since is not None:
            window = now - down_since
            longest, total, down_since = max(longest, window), total + window, None
        elif not ok:
            failed += 1
            down_since = now if down_since is None else down_since
        if _consume(stop_file):
            stopped_by = "stop_file"
            break
        if now - started > max_seconds:
            stopped_by = "max_seconds"
            break
        if owner and now - last_owner_check >= OWNER_CHECK_SECONDS:
            last_owner_check = now
            if alive(owner) is False:
                stopped_by = "owner_gone"
                break
        time.sleep(interval)
    if down_since is not None:          # still down at the end
        window = time.monotonic() - down_since
        longest, total = max(longest, window), total + window
    return dict(polls=polls, failed_polls=failed, unavailable_seconds=round(longest, 3),
                total_unavailable_seconds=round(total, 3), healthy_at_end=ok,
                stopped_by=stopped_by)


def _run_watcher(url: str, stop_file: str, interval: float, max_seconds: float,
                 owner: dict | None) -> None:
    """The detached watcher's whole life: watch, then leave the result for ``collect`` (not
    when its run is gone: nobody would collect it)."""
    result = watch(url, stop_file, interval, max_seconds, owner)
    if result["stopped_by"] == "owner_gone":
        _consume(stop_file)
        return
    write_atomic(result_path(stop_file), json.dumps(result).encode(), 0o600)


def _detach(report_fd: int) -> None:
    """In the watcher: a session of its own, / as its directory, and no descriptor of its
    parent's (an SSH channel or a pipe held open would keep the module call waiting).  Its pid
    goes to ``report_fd`` once it leads its own session, so ``start`` returns a watcher that
    is detached already."""
    os.setsid()
    os.write(report_fd, str(os.getpid()).encode())
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)


def start(url: str, stop_file: str, interval: float = 0.05, max_seconds: float = 600,
          owner: dict | None = None) -> dict:
    """Fork the detached watcher of ``stop_file`` and return its identity (``process_owner``)
    at once.  A stop or result file of an earlier run with the same name is removed first."""
    remove_stale_files(stop_file)
    for path in (stop_file, result_path(stop_file)):
        _consume(path)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:                                     # the intermediate child
        try:
            os.close(read_end)
            if os.fork() == 0:                         # the watcher
                code = 1
                try:
                    _detach(write_end)                 # reports its pid, closes the pipe
                    _run_watcher(url, stop_file, interval, max_seconds, owner)
                    code = 0
                finally:
                    os._exit(code)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as fh:
            pid = fh.read().decode() or "0"
    finally:
        os.waitpid(child, 0)
    if not pid.isdigit() or int(pid) == 0:
        raise OSError("the /health watcher could not be started")
    return identity(int(pid))


def collect(stop_file: str, watcher: dict | None = None, wait_seconds: float = 30) -> dict:
    """Stop the watcher of ``stop_file`` and return its measurement; both files are removed.
    A watcher that is gone without a result (killed) or does not answer within
    ``wait_seconds`` gives ``stopped_by: lost`` (the stop file is left to a watcher that is
    still alive: it removes it when it sees it)."""
    result_file = result_path(stop_file)
    if not os.path.exists(result_file):
        os.close(os.open(stop_file, os.O_WRONLY | os.O_CREAT, 0o600))
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            with open(result_file, "rb") as fh:
                result = json.loads(fh.read().decode())
            break
        except FileNotFoundError:
            pass
        except ValueError:
            result = {"stopped_by": "lost"}
            break
        gone = watcher is not None and alive(watcher) is False
        if gone and not os.path.exists(result_file):
            _consume(stop_file)
            return {"stopped_by": "lost"}
        if time.monotonic() > deadline:
            return {"stopped_by": "lost"}
        time.sleep(0.02)
    _consume(result_file)
    if result.get("stopped_by") != "stop_file":     # it ended before it saw the stop file
        _consume(stop_file)
    return result
