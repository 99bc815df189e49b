"""Callback plugin: after the play recap, one line naming every host the run did not finish
(failed, unreachable, or never reached because the run stopped first), and why; nothing when
every host finished.  Enabled in ansible.cfg (callbacks_enabled)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: flashmm_summary
type: aggregate
short_description: One closing line naming the hosts a run did not finish, and why
description:
  - >-
    After the play recap, prints one line naming each host the run did not finish (failed,
    unreachable, or not reached because the run stopped before its batch) with the task and
    the message of its last failure, and what a rerun does; nothing when every host finished.
  - >-
    A rescued failure does not count; a task with no_log reports no message, so no secret is
    shown.
requirements:
  - enabled in ansible.cfg (callbacks_enabled = flashmm_summary)
"""

from ansible.plugins.callback import CallbackBase  # noqa: E402  (after DOCUMENTATION, as Ansible plugins put it)

MAX_REASON = 240


def _one_line(text: object) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= MAX_REASON else line[:MAX_REASON - 3] + "..."


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "flashmm_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hosts: dict[str, None] = {}          # every host of the plays, in order
        self._why: dict[str, str] = {}             # host -> its last failure
        self._plays: list = []                     # the playbook's plays, in order
        self._started: set[str] = set()            # the plays that started (any batch)

    def v2_playbook_on_start(self, playbook):
        try:
            self._plays += playbook.get_plays()
        except Exception:  # noqa: BLE001  (a summary never breaks a run)
            pass

    def v2_playbook_on_play_start(self, play):
        self._started.add(play._uuid)
        try:       # the hosts the play targets (after --limit): none of it is public API
            inventory = play.get_variable_manager()._inventory
            names = [h.name for h in inventory.get_hosts(play.hosts) if not h.implicit]
        except Exception:  # noqa: BLE001  (a summary never breaks a run)
            names = []
        for name in names:
            self._hosts.setdefault(name, None)

    def _record(self, result, kind: str) -> None:
        msg = result._result.get("msg", "") if isinstance(result._result, dict) else ""
        reason = f'{kind} at "{_one_line(result.task_name or result._task.get_name())}"'
        if msg:
            reason += f": {_one_line(msg)}"
        self._why[result._host.get_name()] = reason

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        failed = [h for h in sorted(stats.processed)
                  if stats.failures.get(h) or stats.dark.get(h)]
        unreached = [h for h in self._hosts if h not in stats.processed]
        skipped = [p.get_name() for p in self._plays if p._uuid not in self._started]
        if not failed and not unreached and not skipped:
            return
        parts = [f"{h} ({self._why.get(h, 'failed')})" for h in failed]
        if unreached:
            parts.append("not reached: " + ", ".join(unreached))
        if skipped:
            partly = [h for h in self._hosts if h in stats.processed and h not in failed]
            parts.append("the run stopped before the play(s) " + ", ".join(f'"{n}"' for n in skipped)
                         + (f" ({', '.join(partly)} did the plays before)" if partly else ""))
        total = len(set(self._hosts) | set(failed))
        self._display.display(
            f"flashmm: {len(failed) + len(unreached)} of {total} host(s) not finished: "
            + "; ".join(parts) + ". Run the playbook again to finish (what is done already "
            "reports no change).", stderr=False)
