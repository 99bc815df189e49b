#!/usr/bin/python
"""Ansible module: poll the app's ``/health`` until told to stop, and report how long it was
unavailable.  Run it asynchronously around a restart (``async``/``poll: 0``), then create
O(stop_file) and collect the result with ``async_status``.  Standard library only."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_health_watch
short_description: Measure how long FlashMM's /health answered anything but 200
description:
  - Polls O(url) every O(interval) seconds until O(stop_file) exists or O(max_seconds) pass,
    and reports the unavailability it saw. The stop file stays (removing it would race with
    whoever creates it); stop files of earlier watchers in the same directory, older than an
    hour, are removed when a watcher starts. A window is unavailable from
    the first poll that did not get 200 to the next one that did.
  - Meant to run asynchronously around a restart of the app (a secret rotation).
options:
  url: {description: The health URL., type: str, required: true}
  stop_file: {description: Stop polling once this file exists; name it per run., type: path, required: true}
  interval: {description: Seconds between polls., type: float, default: 0.05}
  max_seconds: {description: Stop polling after this long in any case., type: float, default: 600}
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Watch /health while the app restarts
  flashmm_health_watch:
    url: http://127.0.0.1:8000/health
    stop_file: /opt/flashmm/.flashmm/health-watch.stop
  async: 600
  poll: 0
  register: watch
"""

RETURN = r"""
polls: {description: Polls made., type: int, returned: always}
failed_polls: {description: Polls that did not get 200., type: int, returned: always}
unavailable_seconds: {description: Longest unavailable window in seconds., type: float, returned: always}
total_unavailable_seconds: {description: Sum of all unavailable windows., type: float, returned: always}
healthy_at_end: {description: The last poll got 200., type: bool, returned: always}
"""

import os  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402


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


def watch(url: str, stop_file: str, interval: float, max_seconds: float) -> dict:
    remove_stale_stop_files(stop_file)
    polls = failed = 0
    longest = total = 0.0
    down_since = None
    ok = False
    started = time.monotonic()
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
        if os.path.exists(stop_file) or now - started > max_seconds:
            break
        time.sleep(interval)
    if down_since is not None:          # still down at the end
        window = time.monotonic() - down_since
        longest, total = max(longest, window), total + window
    return dict(polls=polls, failed_polls=failed, unavailable_seconds=round(longest, 3),
                total_unavailable_seconds=round(total, 3), healthy_at_end=ok)


def main():
    module = AnsibleModule(argument_spec=dict(
        url=dict(type="str", required=True), stop_file=dict(type="path", required=True),
        interval=dict(type="float", default=0.05), max_seconds=dict(type="float", default=600)))
    p = module.params
    module.exit_json(changed=False, **watch(p["url"], p["stop_file"], p["interval"],
                                            p["max_seconds"]))


if __name__ == "__main__":
    main()
