#!/usr/bin/python
"""Ansible module: measure how long the app's ``/health`` was unavailable while its host
rolled.  O(state=start) forks a detached watcher and returns at once; O(state=collect) stops it
and returns what it measured.  The logic: src/flashmm_deploy/hostside/health_watch.py (shipped
as module_utils/flashmm_health_watch.py).  The action plugin of the same name gives O(state=start)
its run's owner (the ``ansible-playbook`` process): the watcher ends when its run is gone."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: flashmm_health_watch
short_description: Measure how long FlashMM's /health answered anything but 200
description:
  - O(state=start) starts a detached watcher that polls O(url) every O(interval) seconds until
    O(stop_file) exists, its run's controller process is gone, or O(max_seconds) pass, and
    returns at once with the watcher's identity (RV(watcher)). Stop and result files of
    earlier watchers in the same directory older than an hour are removed.
  - O(state=collect) creates O(stop_file), waits for the watcher's result and returns it; the
    watcher removes the stop file once it has seen it, and collect removes the result file.
    A window is unavailable from the first poll that did not get 200 to the next one that did.
  - The action plugin sets O(owner) to the identity of the C(ansible-playbook) process of the
    run. Where the watcher runs on the controller's machine (same boot, same pid namespace, as
    with a local connection), it ends within a second of that process being killed and
    leaves no file; elsewhere the pid means nothing and O(max_seconds) bounds it.
  - Two calls per roll, where Ansible's C(async) would cost its wrapper, the module and one
    C(async_status) call per poll.
options:
  state: {description: Start a watcher or collect its result., type: str, default: start, choices: [start, collect]}
  url: {description: The health URL (O(state=start))., type: str}
  stop_file: {description: Stop polling once this file exists; name it per run. The result file is beside it (C(.result))., type: path, required: true}
  interval: {description: Seconds between polls., type: float, default: 0.05}
  max_seconds: {description: Stop polling after this long in any case., type: float, default: 600}
  owner:
    description: The run's controller process (pid, start, boot_id, pid_namespace); set by the action plugin.
    type: dict
  watcher:
    description: The watcher's identity, RV(watcher) of O(state=start); O(state=collect) stops waiting once it is gone.
    type: dict
  wait_seconds: {description: How long O(state=collect) waits for the result., type: float, default: 30}
author: flashmm-deploy
"""

EXAMPLES = r"""
- name: Watch /health while the app restarts
  flashmm_health_watch:
    url: http://127.0.0.1:8000/health
    stop_file: /opt/flashmm/.flashmm/watch-RUN.stop
  register: watch

- name: Stop watching and collect
  flashmm_health_watch:
    state: collect
    stop_file: /opt/flashmm/.flashmm/watch-RUN.stop
    watcher: "{{ watch.watcher }}"
  register: health
"""

RETURN = r"""
watcher: {description: "The watcher's identity (pid, start, boot_id, pid_namespace).", type: dict, returned: state=start}
polls: {description: Polls made., type: int, returned: state=collect and the watcher reported}
failed_polls: {description: Polls that did not get 200., type: int, returned: state=collect and the watcher reported}
unavailable_seconds: {description: Longest unavailable window in seconds., type: float, returned: state=collect and the watcher reported}
total_unavailable_seconds: {description: Sum of all unavailable windows., type: float, returned: state=collect and the watcher reported}
healthy_at_end: {description: The last poll got 200., type: bool, returned: state=collect and the watcher reported}
stopped_by: {description: "Why the watcher ended: stop_file, max_seconds, or lost (it gave no result).", type: str, returned: state=collect}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.flashmm_health_watch import collect, start  # noqa: E402


def main():
    module = AnsibleModule(argument_spec=dict(
        state=dict(type="str", default="start", choices=["start", "collect"]),
        url=dict(type="str"), stop_file=dict(type="path", required=True),
        interval=dict(type="float", default=0.05), max_seconds=dict(type="float", default=600),
        owner=dict(type="dict"), watcher=dict(type="dict"),
        wait_seconds=dict(type="float", default=30)),
        required_if=[("state", "start", ("url",))], supports_check_mode=True)
    p = module.params
    if module.check_mode:
        module.exit_json(changed=False)
    try:
        if p["state"] == "start":
            module.exit_json(changed=False, watcher=start(
                p["url"], p["stop_file"], p["interval"], p["max_seconds"], p["owner"]))
        result = collect(p["stop_file"], p["watcher"], p["wait_seconds"])
    except OSError as exc:
        module.fail_json(msg=f"{p['stop_file']}: {exc.strerror or exc}")
    if result.get("stopped_by") == "lost":
        module.warn("the /health watcher gave no result (killed, or it did not answer within "
                    f"{p['wait_seconds']:g} s): this roll's unavailability is not measured")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
