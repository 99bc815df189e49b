#!/usr/bin/python
"""Ansible module: poll the app's ``/health`` until told to stop, and report how long it was
unavailable.  Run it asynchronously around a restart (``async``/``poll: 0``), stop it with
O(state=stop) (which creates O(stop_file)), and collect the result with ``async_status``.
The action plugin of the same name gives it its run's owner (the ``ansible-playbook``
process): the watcher ends when its run is gone.  Standard library only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_health_watch
short_description: Measure how long FlashMM's /health answered anything but 200
description:
  - O(state=watch) polls O(url) every O(interval) seconds until O(stop_file) exists, its run's
    controller process is gone, or O(max_seconds) pass, and reports the unavailability it saw
    and why it stopped. A window is unavailable from the first poll that did not get 200 to
    the next one that did.
  - The watcher removes O(stop_file) once it has seen it. O(state=stop) creates it (no other
    step on it afterwards, so the watcher may remove it at once). Stop files of earlier
    watchers in the same directory older than an hour (a run that stopped a watcher which had
    already ended) are removed when a watcher starts.
  - The action plugin sets O(owner) to the identity of the C(ansible-playbook) process of the
    run. Where the watcher runs on the controller's machine (same boot, same pid namespace, as
    with a local connection), it ends within a second of that process being killed; elsewhere
    the pid means nothing and O(max_seconds) bounds it.
  - Meant to run asynchronously around a restart of the app (a secret rotation).
options:
  state: {description: Watch or stop the watcher of O(stop_file)., type: str, default: watch, choices: [watch, stop]}
  url: {description: The health URL (O(state=watch))., type: str}
  stop_file: {description: Stop polling once this file exists; name it per run., type: path, required: true}
  interval: {description: Seconds between polls., type: float, default: 0.05}
  max_seconds: {description: Stop polling after this long in any case., type: float, default: 600}
  owner:
    description: The run's controller process (pid, start, boot_id, pid_namespace); set by the action plugin.
    type: dict
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Watch /health while the app restarts
  flashmm_health_watch:
    url: http://127.0.0.1:8000/health
    stop_file: /opt/flashmm/.flashmm/watch-RUN.stop
  async: 600
  poll: 0
  register: watch

- name: Stop watching
  flashmm_health_watch:
    state: stop
    stop_file: /opt/flashmm/.flashmm/watch-RUN.stop
"""

RETURN = r"""
polls: {description: Polls made., type: int, returned: state=watch}
failed_polls: {description: Polls that did not get 200., type: int, returned: state=watch}
unavailable_seconds: {description: Longest unavailable window in seconds., type: float, returned: state=watch}
total_unavailable_seconds: {description: Sum of all unavailable windows., type: float, returned: state=watch}
healthy_at_end: {description: The last poll got 200., type: bool, returned: state=watch}
stopped_by: {description: "Why the watcher ended: stop_file, owner_gone or max_seconds.", type: str, returned: state=watch}
"""

import os  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_process_owner import alive  # noqa: E402

OWNER_CHECK_SECONDS = 0.5


def healthy(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def remove_stale_stop_files(stop_file: str, older_than: float = 3600) -> None:
    directory = os.path.dirname(stop_file) or "."
    suffix = os.path.splitext(stop_file)[1]
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        path = os.path.join(directory, name)
        try:
            if (name.endswith(suffix) and path != stop_file
                    and time.time() - os.stat(path).st_mtime > older_than):
                os.unlink(path)
        except OSError:
            pass


def stop(stop_file: str) -> None:
    """Create the stop file and do nothing more with it: the watcher removes it once seen."""
    os.close(os.open(stop_file, os.O_WRONLY | os.O_CREAT, 0o600))


def consume(stop_file: str) -> bool:
    """Whether the stop file is there; removed when it is."""
    try:
        os.unlink(stop_file)
        return True
    except FileNotFoundError:
        return False


def watch(url: str, stop_file: str, interval: float, max_seconds: float,
          owner: dict | None = None) -> dict:
    remove_stale_stop_files(stop_file)
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
        if consume(stop_file):
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


def main():
    module = AnsibleModule(argument_spec=dict(
        state=dict(type="str", default="watch", choices=["watch", "stop"]),
        url=dict(type="str"), stop_file=dict(type="path", required=True),
        interval=dict(type="float", default=0.05), max_seconds=dict(type="float", default=600),
        owner=dict(type="dict")),
        required_if=[("state", "watch", ("url",))], supports_check_mode=True)
    p = module.params
    if p["state"] == "stop":
        if not module.check_mode:
            try:
                stop(p["stop_file"])
            except OSError as exc:
                module.fail_json(msg=f"{p['stop_file']}: cannot create ({exc.strerror})")
        module.exit_json(changed=False)
    module.exit_json(changed=False, **watch(p["url"], p["stop_file"], p["interval"],
                                            p["max_seconds"], p["owner"]))


if __name__ == "__main__":
    main()
