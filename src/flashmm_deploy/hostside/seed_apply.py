"""Apply a rendered seed script (``seed_script.render_script``) to a Redis database and turn its
report into what an Ansible module returns.

Standard library only: Ansible ships this file to target hosts as
``module_utils/flashmm_seed_apply.py`` for ``library/flashmm_runtime.py`` and
``library/flashmm_files.py``.  On the controller (tests, the CLI) the package's own modules are
imported instead of the shipped copies; both are the same files.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

try:
    from flashmm_deploy.hostside.audit_log import runtime_lines
    from flashmm_deploy.hostside.seed_script import MODES, script_sha
    from flashmm_deploy.redis.client import Connection, Endpoint, RedisError, ReplyError
except ImportError:  # on a target host, inside an AnsiballZ payload
    from ansible.module_utils.flashmm_audit_log import runtime_lines  # type: ignore[no-redef]
    from ansible.module_utils.flashmm_redis_client import (  # type: ignore[no-redef]
        Connection, Endpoint, RedisError, ReplyError)
    from ansible.module_utils.flashmm_seed_script import MODES, script_sha  # type: ignore[no-redef]


class SeedError(Exception):
    """Seeding failed.  ``kind``: input, connect, tls, auth, select, protocol, script.  The
    message names the endpoint, never a password."""

    def __init__(self, message: str, kind: str = "script"):
        super().__init__(message)
        self.kind = kind


_AUTH_ERRORS = ("NOAUTH", "WRONGPASS", "NOPERM")


def apply(endpoint: "Endpoint", script: str, *, mode: str = "keep", check: bool = False) -> dict:
    """Run ``script`` on ``endpoint`` and return its decoded JSON report.  Round trips: the
    connection's AUTH + SELECT, one EVALSHA, and one EVAL only when the server has not cached
    the script yet.  ``check`` runs the same read phase and writes nothing."""
    if mode not in MODES:
        raise SeedError("mode must be one of %s, not %r" % ("/".join(MODES), mode), "input")
    argv = (mode, "check" if check else "apply")
    try:
        with Connection(endpoint) as conn:
            reply = conn.pipeline(("EVALSHA", script_sha(script), 0) + argv)[0]
            if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
                reply = conn.pipeline(("EVAL", script, 0) + argv)[0]
    except RedisError as exc:
        raise SeedError(str(exc), exc.kind) from None
    where = endpoint.label()
    if isinstance(reply, ReplyError):
        err = str(reply)
        kind = "auth" if err.startswith(_AUTH_ERRORS) else "script"
        raise SeedError("seed script failed on redis %s: %s" % (where, err), kind)
    if not isinstance(reply, bytes):
        raise SeedError("seed script on redis %s returned %s, not JSON"
                        % (where, type(reply).__name__), "protocol")
    try:
        return json.loads(reply.decode("utf-8", "replace"))
    except ValueError:
        raise SeedError("seed script on redis %s returned invalid JSON" % where,
                        "protocol") from None


# ---- the Ansible face: one argument spec for every module that seeds -------------------------

# How a module reaches one Redis database: the options of every module that talks to Redis
# (seed, backup, restore, record migration; the ACL reload without db).
ENDPOINT_OPTIONS = dict(
    host=dict(type="str", default="127.0.0.1"),
    port=dict(type="int", default=6379),
    db=dict(type="int", default=0),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    tls=dict(type="bool", default=False),
    ca_file=dict(type="path"),
    cert_file=dict(type="path"),
    key_file=dict(type="path"),
    tls_verify=dict(type="bool", default=True),
    timeout=dict(type="float", default=5.0),
)

RUNTIME_OPTIONS = dict(
    ENDPOINT_OPTIONS,
    # The script holds runtime keys only, which the schema forbids to be secrets; no_log would
    # make Ansible mask every copy of it, blanking the --diff of redis/seed.lua.
    script=dict(type="str", required=True, no_log=False),
    mode=dict(type="str", choices=list(MODES), default="keep"),
)


def endpoint_from_params(p: Mapping[str, Any]) -> "Endpoint":
    if p.get("username") and not p.get("password"):
        raise SeedError("a redis username needs a password", "input")
    if not 0 <= p["db"] <= 2 ** 31 - 1:
        raise SeedError("db must be a non-negative integer", "input")
    return Endpoint(host=p["host"], port=p["port"], db=p["db"], username=p.get("username"),
                    password=p.get("password"), tls=p.get("tls", False),
                    ca_file=p.get("ca_file"), cert_file=p.get("cert_file"),
                    key_file=p.get("key_file"), verify=p.get("tls_verify", True),
                    timeout=p["timeout"])


def _lines(values: Optional[Mapping[str, Any]]) -> str:
    return "".join("%s = %s\n" % (k, v) for k, v in sorted((values or {}).items())
                   if v is not None)


def apply_for_module(params: Mapping[str, Any], check: bool):
    """Run the seed described by module ``params`` (``RUNTIME_OPTIONS``).  Returns the result
    to report, its ``--diff`` entry and one warning per runtime override kept (key names and
    runtime values only: runtime keys are never secrets).  Raises SeedError."""
    endpoint = endpoint_from_params(params)
    result = apply(endpoint, params["script"], mode=params["mode"], check=check)
    where = "redis %s" % endpoint.label()
    warnings = ["runtime override kept in %s: %s (inventory value not applied; "
                "flashmm_runtime_mode=enforce overwrites it)" % (where, key)
                for key in sorted(result["drift"])]
    out = dict(
        changed=result["would_change"] if check else result["changed"],
        changed_keys=result["changed_keys"],
        drift=result["drift"],
        enforced=result["enforced"],
        version=result["version"],
    )
    if result.get("unknown"):       # check mode: keys under the prefix the schema lacks
        out["unknown"] = result["unknown"]
    diff = dict(before=_lines(result["before"]), after=_lines(result["after"]),
                before_header=where, after_header=where)
    return out, diff, warnings


class SeedStep:
    """The seed as the Redis step of a converge (``converge.RedisStep``); a report is
    ``apply_for_module``'s (result, diff, warnings).  ``direct``: no read before the write
    (a call that writes no file: one round trip, the script checks as it applies)."""

    def __init__(self, params: Mapping[str, Any], *, check_mode: bool, direct: bool = False):
        self.params, self.check_mode, self.direct = params, check_mode, direct

    def check(self):
        if self.direct and not self.check_mode:
            return None
        return apply_for_module(self.params, True)

    def apply(self, report):
        """Writes unless the check found nothing to change (a rerun: one Redis call, not
        two)."""
        if report is None or report[0]["changed"]:
            return apply_for_module(self.params, False)
        return report

    def audit_lines(self, report, audit) -> list:
        return runtime_lines(audit, report[0])
