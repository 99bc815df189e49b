"""Test support (imported as `support`): helpers that run ``ansible-playbook`` and
``flashmm-config`` the way an operator does, inventories, vault files, plans.  Imported by both
tiers, so it imports neither redis-py nor cryptography at the top: the redis-server helpers
live in redis_support.py (their names are importable from here too, on first use) and the
ports in ports.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import secrets as random_tokens
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import yaml

from flashmm_deploy.config.schema import FIELDS, SECRET_FIELDS
from ports import free_port as _free_port  # noqa: F401  (the name tests import from here)

# redis_support's names, importable from here as before; imported when first asked for
_REDIS_NAMES = frozenset({"RedisServer", "start_redis", "stop_redis", "redis_server",
                          "allocate_dbs", "redis_db", "snapshot_redis"})


def __getattr__(name: str):
    if name in _REDIS_NAMES:
        import redis_support
        return getattr(redis_support, name)
    raise AttributeError(f"module 'support' has no attribute {name!r}")


ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
INVENTORIES = ROOT / "inventories"
# Test inventories: "sandbox" is three hosts without a stack, one shared redis-server
# (a database each), roots under $FLASHMM_SANDBOX.
FIXTURES = ROOT / "tests" / "fixtures" / "inventories"
SANDBOX = FIXTURES / "sandbox"


def tool_env(**extra: str) -> dict[str, str]:
    """The environment an operator's shell would have after setup: the venv first on PATH and
    the project's ansible.cfg, whatever directory the command runs in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "FLASHMM_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    # ansible.cfg's vault_identity_list is relative to the project root: absolute here, for
    # commands run in other directories
    env["ANSIBLE_VAULT_IDENTITY_LIST"] = ",".join(
        f"{e}@{ROOT / '.state' / 'vault' / f'{e}.pass'}" for e in ("local", "development"))
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.update(extra)
    return env


# FLASHMM_TEST_RUN_LOG=FILE: one JSON line per process run() starts (test, command, seconds,
# CPU of the process and its children), for bench/suite_runs.py.  The suite's CPU is mostly
# these processes; this says which tests start how many.
RUN_LOG = os.environ.get("FLASHMM_TEST_RUN_LOG")


def run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT,
        timeout: int = 300) -> subprocess.CompletedProcess:
    with logged_run(cmd):
        return subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True,
                              text=True, timeout=timeout)


@contextlib.contextmanager
def logged_run(cmd: list[str]):
    """Around a process started and waited for in the block: its line in the run log, if
    FLASHMM_TEST_RUN_LOG is set (the docker and fleet.sh helpers use it too)."""
    if not RUN_LOG:
        yield
        return
    start, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        yield
    finally:
        _log_run(cmd, time.monotonic() - start, before)


def _log_run(cmd: list[str], seconds: float, before) -> None:
    """Appends one line (O_APPEND: whole lines from every xdist worker).  The CPU is this
    process's children's since the run started: runs of one test in threads at once share it."""
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    what = [Path(cmd[0]).name] + [Path(c).name if c.endswith(".yml") else c for c in cmd[1:2]]
    append_run_log({"test": test, "cmd": " ".join(what), "seconds": round(seconds, 3),
                    "cpu": round(cpu, 3)})


def append_run_log(entry: dict) -> None:
    """One JSON line, appended (O_APPEND: whole lines from every xdist worker); a failure is a
    warning, never in place of a run's own outcome (run() calls this in a finally)."""
    try:
        fd = os.open(RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        warnings.warn(f"FLASHMM_TEST_RUN_LOG={RUN_LOG}: not written ({exc})", stacklevel=3)


def flashmm_config(*args: str, **kw) -> subprocess.CompletedProcess:
    return run([str(VENV_BIN / "flashmm-config"), *args], **kw)


def ansible_playbook(playbook: str, inventory: Path | str, *args: str, env=None,
                     timeout: int = 600) -> subprocess.CompletedProcess:
    return run([str(VENV_BIN / "ansible-playbook"), str(ROOT / playbook), "-i", str(inventory),
                *args], env=env, timeout=timeout)


_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                    r"\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.M)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """host -> counts from the PLAY RECAP of an ansible-playbook run."""
    names = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
    return {m.group(1): dict(zip(names, map(int, m.groups()[1:]))) for m in _RECAP.finditer(stdout)}


def copy_inventory(name: str, dest: Path) -> Path:
    """A private copy of tests/fixtures/inventories/<name> (or else inventories/<name>) that a
    test may edit."""
    target = dest / name
    source = FIXTURES / name if (FIXTURES / name).is_dir() else INVENTORIES / name
    # local/ and development/ vaults are generated per machine (git-ignored): never copied
    generated = shutil.ignore_patterns("vault.yml") if name in ("local", "development") else None
    shutil.copytree(source, target, ignore=generated)
    return target


def snapshot_files(root: Path) -> dict[str, tuple[int, bytes]]:
    """relative path -> (mode, content) of every file below ``root``, but the lock files:
    each call that takes a host's lock notes who holds it there."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_mode & 0o7777, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


def valid_secrets() -> dict[str, str]:
    """A valid value for every secret of the schema (so every 'needed because' is satisfied)."""
    from cryptography.fernet import Fernet

    out = {}
    for spec in SECRET_FIELDS:
        if spec.key.endswith("encryption_key"):
            out[spec.key] = Fernet.generate_key().decode("ascii")
        elif spec.key.endswith("_url"):
            out[spec.key] = "https://hooks.example.com/" + random_tokens.token_urlsafe(16)
        else:
            out[spec.key] = random_tokens.token_urlsafe(32)
    return out


# The runtime keys by short name, and one desired state, shared by the Redis seed tests.
POS = FIELDS["trading.max_position_usdc"].redis_key
HZ = FIELDS["trading.quote_frequency_hz"].redis_key
CONF = FIELDS["ml.confidence_threshold"].redis_key
ALERT = FIELDS["monitoring.alert_enabled"].redis_key
SEED_DESIRED = {POS: "2000.0", HZ: "5.0", CONF: "0.7", ALERT: "true"}


def build_plan(host_vars: dict[str, dict], *, require_secrets: bool = True, **kw):
    """The controller pass (flashmm_deploy.plan.plan.build) run in-process, as the flashmm_plan
    action runs it, over plain per-host variable mappings and this project's roles."""
    from flashmm_deploy.inventory import host_validation
    from flashmm_deploy.plan import plan
    from flashmm_deploy.render import render
    from flashmm_deploy.config import role_settings

    roles = ROOT / "roles"
    specs = role_settings.load_specs({r: roles / r for r in plan.ROLES})
    templates = render.Templates({name: (roles / role / "templates" / src).read_text()
                                  for name, (role, src) in plan.TEMPLATES.items()})
    inputs = {host: plan.HostInput(layer_vars=host_validation.layer_vars(variables),
                                   variables=variables, source_of=lambda var: "test variables",
                                   machine=host)
              for host, variables in host_vars.items()}
    return plan.build(inputs, role_specs=specs, templates=templates,
                      require_secrets=require_secrets, **kw)


# ---- vault files -----------------------------------------------------------------------------

def vault_keys():
    """The vault passwords a shell in the project has: ansible.cfg's vault_identity_list (the
    local and development passwords set-up generates)."""
    from flashmm_deploy.inventory.vault import VaultKeys

    cwd = os.getcwd()
    try:                                  # ansible.cfg's relative paths: from the project root
        os.chdir(ROOT)
        keys = VaultKeys.given()
        keys.secrets()
    finally:
        os.chdir(cwd)
    return keys


def read_vault(path: Path) -> dict:
    """The variables of a vault file, decrypted when it is encrypted."""
    from flashmm_deploy.inventory.vault import is_encrypted

    raw = Path(path).read_bytes()
    if is_encrypted(raw):
        raw = vault_keys().decrypt(raw, str(path))
    return yaml.safe_load(raw) or {}


def write_vault(path: Path, data: dict) -> None:
    """Replace a vault file's variables, keeping its form (encrypted with its vault id, or
    plain)."""
    from flashmm_deploy.inventory.vault import header_vault_id, is_encrypted

    path = Path(path)
    text = yaml.safe_dump(data).encode()
    raw = path.read_bytes() if path.exists() else b""
    if is_encrypted(raw):
        vault_id = header_vault_id(raw)
        text = vault_keys().encrypt(text, vault_id, str(path))
    path.write_bytes(text)


def plain_vault(inv: Path) -> Path:
    """Decrypt an inventory's vault in place: for suites that edit it as plain YAML (Ansible
    and the reader accept a plain vault file; encryption is tested where it matters)."""
    path = Path(inv) / "group_vars" / "all" / "vault.yml"
    path.write_text("---\n" + yaml.safe_dump(read_vault(path), sort_keys=False))
    return Path(inv)
