"""One host's converge: the ordered steps every host module that changes a host runs, named once.

Under the host's lock (``host_lock``), for ``flashmm_files`` (deploy, rotation), ``flashmm_restore``
and ``flashmm_runtime`` (the seed of a host whose files an earlier call wrote):

1. ``check``  the Redis step's read phase (the seed's check, the restore's dry run), before any
              file is written; on a host without its root yet, before even the root is made;
2. ``acl``    the ACL file written first, and the running Redis brought to its users live
              (``ACL SETUSER``: no restart, no dropped client; ``live_acl``); check mode:
              whether it would;
3. ``files``  the other files written, files of the previous run removed, the run and the
              secrets generation recorded (``filesync``);
4. ``apply``  the Redis step's write phase (it writes only what its check found);
5. ``audit``  one line per change: the files', then the Redis step's (``audit_log``).

A failure in steps 2-5 puts every file back (``filesync``); each Redis write is one script, all
or nothing.  Without files (``files=None``) the steps are 1, 2, 4, 5, still under the lock
when ``run_id`` names the run whose files the Redis step goes with (``check_run``).

Stdlib only, no relative imports: shipped to target hosts as ``module_utils/flashmm_converge.py``.
"""

from __future__ import annotations

import os

try:
    from flashmm_deploy.hostside import audit_log
    from flashmm_deploy.hostside.filesync import HostLock, check_run, sync
    from flashmm_deploy.hostside.redis_acl import ACL_PATH, endpoint_args_from, ensure_loaded
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils import flashmm_audit_log as audit_log  # type: ignore[no-redef]
    from ansible.module_utils.flashmm_filesync import (  # type: ignore[no-redef]
        HostLock, check_run, sync)
    from ansible.module_utils.flashmm_redis_acl import (  # type: ignore[no-redef]
        ACL_PATH, endpoint_args_from, ensure_loaded)


class RedisStep:
    """A Redis phase of a converge.  ``check()`` reads (writes nothing) and returns its report;
    ``apply(report)`` writes what the check found (nothing when it found nothing) and returns
    the new report; ``audit_lines(report, audit)`` are the lines of what it wrote."""

    def check(self) -> dict:
        raise NotImplementedError

    def apply(self, report: dict) -> dict:
        raise NotImplementedError

    def audit_lines(self, report: dict, audit: dict) -> list:
        return []


def live_acl(options: dict, content: str, *, check: bool, extra_passwords=(),
             keep_legacy_default: bool = False) -> dict:
    """Bring the running Redis to the users of the ACL file ``content`` (``redis_acl``), logging
    in as deploy's user with ``options``' passwords (then ``extra_passwords``), or as the
    ``default`` user of a stack deployed before the users existed.  Returns ``reloaded``."""
    return ensure_loaded(endpoint_args_from(options),
                         [options.get("password"), options.get("previous_password")]
                         + list(extra_passwords), content, check=check,
                         legacy_passwords=options.get("legacy_passwords") or [],
                         keep_legacy_default=keep_legacy_default)


class _Run:
    """The state of one converge between its steps."""

    def __init__(self, redis, acl, check, audit):
        self.redis, self.acl, self.check, self.audit = redis, acl, check, audit
        self.report = None
        self.acl_result = {}

    def check_redis(self):
        if self.redis is not None and self.report is None:
            self.report = self.redis.check()

    def reload_acl(self):
        a = self.acl
        self.acl_result = live_acl(a["options"], a["content"], check=self.check,
                                   extra_passwords=a.get("extra_passwords", ()),
                                   keep_legacy_default=a.get("keep_legacy_default", False))

    def apply_redis(self):
        """Step 4; returns step 5's lines of the Redis step."""
        if self.redis is None or self.check:
            return []
        self.report = self.redis.apply(self.report)
        return self.redis.audit_lines(self.report, self.audit) if self.audit else []


def converge(root: str, files, *, check: bool = False, redis: RedisStep | None = None,
             acl: dict | None = None, run_id=None, lock_timeout: float = 60.0,
             lease: dict | None = None, audit: dict | None = None, **sync_options) -> dict:
    """Run the steps above.  ``files``: filesync's file specs, or None (Redis only).
    ``acl``: {options (``redis_acl.ACL_RELOAD_OPTIONS``), content, extra_passwords,
    keep_legacy_default} when the host's running Redis takes its ACL file live.
    ``sync_options``: filesync's (owner, group, directory_mode, record_run, generation).

    Returns {``files``: filesync's result (None without files), ``redis``: the Redis step's
    last report (None without one), ``acl``: ``live_acl``'s result ({} without one)}."""
    run = _Run(redis, acl, check, audit)
    if files is None:
        if not check and run_id:
            # under the lock (and ending the run's lease) even with nothing to change
            with HostLock(root, run_id, lock_timeout, lease):
                check_run(root, run_id)
                _redis_only(run, root)
        else:
            _redis_only(run, root)
        return {"files": None, "redis": run.report, "acl": run.acl_result}

    with_acl = acl is not None and any(f["path"] == ACL_PATH for f in files)
    if redis is not None and not os.path.isdir(root):
        run.check_redis()       # a first deploy: not even the root is made if the check fails
    if with_acl and check:
        run.reload_acl()
    synced = sync(root, files, check=check, run_id=run_id, lock_timeout=lock_timeout,
                  lease=lease, audit=audit,
                  before_write=run.check_redis if redis is not None else None,
                  first=ACL_PATH if with_acl else None,
                  after_first=run.reload_acl if with_acl and not check else None,
                  after_write=run.apply_redis if redis is not None and not check else None,
                  **sync_options)
    return {"files": synced, "redis": run.report, "acl": run.acl_result}


def _redis_only(run: _Run, root: str) -> None:
    if run.acl is not None:
        run.reload_acl()
    run.check_redis()
    lines = run.apply_redis()
    if lines:
        audit_log.append(root, run.audit, lines)
