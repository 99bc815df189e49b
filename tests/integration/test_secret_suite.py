"""No secret in any output: a distinct canary in every secret slot (through the vault layer and
through flashmm_env_overrides) and in every field that could carry one (the password of every
URL key's userinfo, free-text keys holding a credential URL), then every CLI command and
``ansible-playbook`` of deploy.yml and playbooks/validate.yml at -vvv and with --check --diff,
failing runs included (an invalid value next to the canaries; a dead Redis port for the seed).

Zero canary hits are allowed in: the output of every run, every file under the hosts' roots
except ``.env`` (and ``influxdb/influxdb.env``), every Redis key and value of the hosts'
databases, every message published on flashmm:config:updates and flashmm:meta:updates.
The positive control: each host's ``.env`` holds the canaries of its secret slots.

Every run happens once, in the module fixture, in a fixed order (the valid deploy first, the
free-text credentials last); the tests then look at what was recorded.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets as random_tokens
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import yaml

from bad_inputs import URL_FIELDS, Ran, run_bounded
from flashmm_deploy.cli import app as cli
from flashmm_deploy.plan.sandbox import make_local_inventory
from flashmm_deploy.hostside.redis_acl import APP_USER, DEPLOY_USER
from flashmm_deploy.config.schema import FIELDS, SECRET_FIELDS
from flashmm_deploy.secrets.secret_files import NOT_FOR_THE_APP
from ports import free_port
from support import INVENTORIES, ROOT, VENV_BIN, start_redis, stop_redis, tool_env

pytestmark = pytest.mark.integration

HOSTS = ("sandbox-01", "sandbox-02", "sandbox-03")
OVERRIDDEN = "sandbox-02"          # its secrets come from flashmm_env_overrides
CHANNELS = ("flashmm:config:updates", "flashmm:meta:updates")
SECRET_FILES = (".env", "influxdb/influxdb.env")
FERNET = ("encryption_key", "old_encryption_key")
# Free-text keys: strings no rule constrains (URL keys and sei.chain_id are constrained).
FREE_TEXT = [p for p, s in FIELDS.items() if not s.secret and s.kind in ("str", "list")
             and p not in URL_FIELDS and p != "sei.chain_id"]
GIB = 1 << 30
# Canary families, by slot prefix: secret slots (vault, env overrides, the --check run's), the
# password of a URL key's userinfo, a credential URL in a free-text key.
FAMILIES = {"secret-slots": ("vault:", "env:", "check-"), "url-userinfo": ("url:",),
            "free-text": ("text:",)}


@dataclass
class Canary:
    slot: str           # where it was planted, e.g. "vault:secret_key"
    value: str
    core: str           # its random part: the needle (a truncated echo is a leak too)


class Canaries:
    def __init__(self):
        self.all: list[Canary] = []

    def _add(self, slot: str, value: str, core: str) -> str:
        self.all.append(Canary(slot, value, core))
        return value

    def plain(self, slot: str) -> str:
        core = random_tokens.token_urlsafe(16)
        return self._add(slot, f"CANARY-{slot.replace(':', '-')}-{core}", core)

    def fernet(self, slot: str) -> str:
        """A valid Fernet key (44 characters of url-safe base64 for 32 bytes) that reads
        CANARY-<slot>-<random>."""
        prefix = f"CANARY-{slot.split(':')[-1]}-"
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        core = "".join(random_tokens.choice(alphabet) for _ in range(42 - len(prefix)))
        core += random_tokens.choice("AEIMQUYcgkosw048")       # the last 2 bits are padding
        return self._add(slot, prefix + core + "=", core)

    def secret(self, slot: str, key: str) -> str:
        if key in FERNET:
            return self.fernet(slot)
        value = self.plain(slot)
        return f"https://hooks.example.com/{value}" if key == "alert_webhook_url" else value

    def found(self, text: str | bytes, family: str | None = None) -> list[str]:
        """The slots of the canaries in ``text`` (of one family: see FAMILIES)."""
        mine = [c for c in self.all if family is None or c.slot.startswith(FAMILIES[family])]
        if isinstance(text, bytes):
            return [c.slot for c in mine if c.core.encode() in text]
        return [c.slot for c in mine if c.core in text]

    def masked(self, text: str) -> str:
        for c in self.all:
            text = text.replace(c.value, f"<{c.slot}>").replace(c.core, f"<{c.slot}>")
        return text


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def dump(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def set_path(data: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def plant_secrets(inv: Path, canaries: Canaries, tag: str, keep: dict[str, str] | None = None):
    """A canary in every secret slot: the vault for every host, env overrides for OVERRIDDEN.
    ``keep``: values to reuse (the Redis passwords the server knows).  Returns the values."""
    keep = keep or {}
    vault = {s.key: keep.get(f"vault:{s.key}") or canaries.secret(f"{tag}vault:{s.key}", s.key)
             for s in SECRET_FIELDS}
    env = {s.env: keep.get(f"env:{s.env}") or canaries.secret(f"{tag}env:{s.env}", s.key)
           for s in SECRET_FIELDS}
    dump(inv / "group_vars/all/vault.yml", {"flashmm_secrets": vault})
    host_file = inv / f"host_vars/{OVERRIDDEN}.yml"
    data = load(host_file)
    data["flashmm_env_overrides"] = env
    dump(host_file, data)
    return vault, env


def edit_env_layer(inv: Path, changes: dict) -> None:
    path = inv / "group_vars/all/flashmm.yml"
    data = load(path)
    for dotted, value in changes.items():
        set_path(data["flashmm_config"], dotted, value)
    dump(path, data)


@dataclass
class Suite:
    tmp: Path
    canaries: Canaries = field(default_factory=Canaries)
    runs: list[tuple[str, set[int] | None, Ran]] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)

    # ---- running ------------------------------------------------------------------------------

    def record(self, label: str, expect: set[int] | None, ran: Ran) -> Ran:
        self.runs.append((label, expect, ran))
        return ran

    def cli(self, label: str, expect: set[int] | None, *args: str) -> Ran:
        return self.record(label, expect, run_bounded(
            [str(VENV_BIN / "flashmm-config"), *args], env=tool_env(), cwd=ROOT, timeout=60,
            memory=GIB))

    def playbook(self, label: str, expect: set[int] | None, playbook: str, inv: Path,
                 *args: str) -> Ran:
        work = self.tmp / "work"
        work.mkdir(exist_ok=True)
        return self.record(label, expect, run_bounded(
            [str(VENV_BIN / "ansible-playbook"), str(ROOT / playbook), "-i", str(inv), *args],
            env=tool_env(), cwd=work, timeout=300, memory=4 * GIB))

    def explain_every_key(self, label: str, expect: set[int], inv: Path, host: str,
                          *extra: str, keys=FIELDS) -> None:
        """``flashmm-config explain`` of every key, plain and --json, in-process."""
        out, err, codes = io.StringIO(), io.StringIO(), set()
        for key in keys:
            for fmt in ([], ["--json"]):
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    try:
                        codes.add(cli.main(["explain", str(inv), key, "--host", host, *fmt,
                                            *extra]))
                    except BaseException as exc:   # noqa: BLE001 - an escape is a finding
                        err.write(f"Traceback (most recent call last): {type(exc).__name__}\n")
                        codes.add(-1)
        code = next(iter(codes)) if len(codes) == 1 else -99     # -99: mixed exit codes
        self.record(label, expect, Ran(code, out.getvalue(), err.getvalue(), 0.0))


def build_and_run(tmp: Path) -> Suite:
    suite = Suite(tmp)
    c = suite.canaries
    # Redis: the default and app users know both app passwords (the vault's, the override's),
    # deploy's user both of its own (deploy's steps log in as it)
    redis_passwords = {"vault:redis_password": c.plain("vault:redis_password"),
                       "env:REDIS_PASSWORD": c.plain("env:REDIS_PASSWORD")}
    deploy_passwords = {"vault:redis_deploy_password": c.plain("vault:redis_deploy_password"),
                        "env:REDIS_DEPLOY_PASSWORD": c.plain("env:REDIS_DEPLOY_PASSWORD")}
    acl = tmp / "users.acl"
    acl.write_text("".join(f"user {user} on " + " ".join(f">{p}" for p in known.values())
                           + " ~* &* +@all\n"
                           for user, known in (("default", redis_passwords),
                                               (APP_USER, redis_passwords),
                                               (DEPLOY_USER, deploy_passwords))))
    redis_passwords.update(deploy_passwords)
    server = start_redis(tmp / "redis", "--aclfile", str(acl))
    suite.server = server
    password = redis_passwords["vault:redis_password"]
    admin = redis.Redis(host=server.host, port=server.port, password=password,
                        decode_responses=True, socket_timeout=5)
    pubsub = admin.pubsub()
    pubsub.subscribe(*CHANNELS)
    try:
        _run_everything(suite, server, redis_passwords)
    finally:
        for _ in range(100000):                 # everything published during the runs
            msg = pubsub.get_message(timeout=1.0)
            if msg is None:
                break
            if msg["type"] == "message":
                suite.messages.append((msg["channel"], str(msg["data"])))
        pubsub.close()
        suite.redis_dump = dump_redis(server, password)
        admin.close()
        stop_redis(server)
    return suite


def _run_everything(suite: Suite, server, redis_passwords: dict[str, str]) -> None:
    tmp, c = suite.tmp, suite.canaries
    suite.sandbox = tmp / "sandbox"
    valid = make_local_inventory(INVENTORIES / "local", tmp / "valid", hosts=3,
                                 redis_port=server.port, first_db=1, sandbox=suite.sandbox,
                                 with_secrets=False)
    edit_env_layer(valid, {"storage.redis.password_required": True})
    suite.vault, suite.env = plant_secrets(valid, c, "", keep=redis_passwords)

    # --check --diff with every secret changed but the Redis password (the seed logs in)
    changed = tmp / "changed"
    shutil.copytree(valid, changed)
    suite.check_canaries_from = len(c.all)
    plant_secrets(changed, c, "check-", keep=redis_passwords)
    suite.check_canaries_to = len(c.all)

    # an invalid value next to the canaries, and a password in every URL key's userinfo
    invalid = tmp / "invalid"
    shutil.copytree(valid, invalid)
    suite.failing_canaries_from = len(c.all)
    urls = {path: f"{scheme}://flashmm:{c.plain(f'url:{path}')}@host.example.com:1234/x"
            for path, scheme in URL_FIELDS.items()}
    edit_env_layer(invalid, {"trading.max_position_usdc": -1, **urls})
    suite.failing_canaries_to = len(c.all)

    # free-text keys holding a credential URL (refused, or at least never written or shown)
    free = tmp / "free-text"
    shutil.copytree(valid, free)
    texts = {path: f"https://flashmm:{c.plain(f'text:{path}')}@text.example.com/x"
             for path in FREE_TEXT}
    edit_env_layer(free, {p: [v] if FIELDS[p].kind == "list" else v for p, v in texts.items()})

    # a local-style inventory missing two generatable secrets
    generate = tmp / "generate"
    shutil.copytree(valid, generate)
    data = load(generate / "group_vars/all/vault.yml")
    del data["flashmm_secrets"]["secret_key"], data["flashmm_secrets"]["api_auth_token"]
    dump(generate / "group_vars/all/vault.yml", data)

    url = f"redis://:{redis_passwords['vault:redis_password']}@127.0.0.1:{server.port}/1"
    dead_port = free_port()
    dead = f"redis://:{redis_passwords['vault:redis_password']}@127.0.0.1:{dead_port}/1"
    ok, bad = {0}, {1, 2}

    # ---- the valid inventory: deploy first, then everything that reads ------------------------
    suite.playbook("deploy -vvv", ok, "deploy.yml", valid, "-vvv")
    suite.playbook("deploy --check --diff -vvv (every secret changed)", ok, "deploy.yml", changed,
                   "--check", "--diff", "-vvv")
    suite.playbook("validate.yml -vvv", ok, "playbooks/validate.yml", valid, "-vvv")
    suite.playbook("validate.yml -vvv require secrets, explain secrets.secret_key", ok,
                   "playbooks/validate.yml", valid, "-vvv", "-e", "flashmm_plan_require_secrets=true",
                   "-e", "flashmm_explain=secrets.secret_key")
    suite.cli("validate", ok, "validate", str(valid))
    suite.cli("validate --require-secrets", ok, "validate", "--require-secrets", str(valid))
    suite.cli("validate --redis (password in the URL)", ok, "validate", str(valid),
              "--host", "sandbox-01", "--redis", url)
    suite.cli("validate --redis (dead port)", bad, "validate", str(valid), "--host", "sandbox-01",
              "--redis", dead)
    suite.cli("diff valid changed-secrets", ok, "diff", str(valid), str(changed))
    suite.cli("diff valid invalid", bad, "diff", str(valid), str(invalid))
    suite.cli("docs --check", None, "docs", "--check", "--root", str(ROOT))
    suite.cli("secrets generate", ok, "secrets", "generate", str(generate))
    for host in ("sandbox-01", OVERRIDDEN):
        suite.explain_every_key(f"explain every key --host {host}", ok, valid, host)
    runtime = [p for p, s in FIELDS.items() if s.runtime]
    suite.explain_every_key("explain runtime keys --redis", ok, valid, "sandbox-01", "--redis", url,
                            keys=runtime)
    suite.explain_every_key("explain runtime keys --redis (dead port)", bad, valid, "sandbox-01",
                            "--redis", dead, keys=runtime)

    # ---- failing runs ---------------------------------------------------------------------------
    suite.cli("validate invalid", bad, "validate", str(invalid))
    suite.cli("validate --require-secrets invalid", bad, "validate", "--require-secrets",
              str(invalid))
    suite.explain_every_key("explain every key (invalid)", bad, invalid, OVERRIDDEN)
    suite.playbook("deploy -vvv invalid", {2}, "deploy.yml", invalid, "-vvv")
    suite.playbook("deploy --check --diff -vvv invalid", {2}, "deploy.yml", invalid, "--check",
                   "--diff", "-vvv")
    suite.playbook("validate.yml -vvv invalid", {2}, "playbooks/validate.yml", invalid, "-vvv")
    suite.playbook("deploy -vvv dead Redis port", {2}, "deploy.yml", valid, "-vvv",
                   "-e", f"flashmm_runtime_redis_port={dead_port}")
    suite.playbook("deploy --check --diff -vvv dead Redis port", {2}, "deploy.yml", changed,
                   "--check", "--diff", "-vvv", "-e", f"flashmm_runtime_redis_port={dead_port}")

    # ---- free-text keys with credentials: last (they might be written) -----------------------
    suite.cli("validate free-text credentials", None, "validate", str(free))
    suite.cli("diff valid free-text", None, "diff", str(valid), str(free))
    suite.explain_every_key("explain every key (free-text credentials)", None, free, "sandbox-01")
    suite.playbook("validate.yml -vvv free-text credentials", None, "playbooks/validate.yml", free,
                   "-vvv")
    suite.playbook("deploy --check --diff -vvv free-text credentials", None, "deploy.yml", free,
                   "--check", "--diff", "-vvv")
    suite.playbook("deploy -vvv free-text credentials", None, "deploy.yml", free, "-vvv")


def dump_redis(server, password: str) -> dict[str, str]:
    """'db<n> <key>' -> its value as text, for every key of every database of the server."""
    out = {}
    admin = redis.Redis(host=server.host, port=server.port, password=password, socket_timeout=5)
    for name in admin.info("keyspace"):
        db = int(str(name).removeprefix("db"))
        client = redis.Redis(host=server.host, port=server.port, db=db, password=password,
                             socket_timeout=5)
        for key in client.scan_iter("*"):
            kind = client.type(key).decode()
            readers = {"string": client.get, "hash": client.hgetall, "set": client.smembers,
                       "list": lambda k, c=client: c.lrange(k, 0, -1),
                       "zset": lambda k, c=client: c.zrange(k, 0, -1, withscores=True)}
            value = readers.get(kind, client.dump)(key)
            out[f"db{db} {key.decode(errors='replace')}"] = repr(value)
        client.close()
    admin.close()
    return out


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Suite:
    return build_and_run(tmp_path_factory.mktemp("secret-suite"))


# ---- the positive control -----------------------------------------------------------------------

def test_env_files_hold_the_secret_canaries(suite):
    """If .env lost the secrets, finding no canary elsewhere would prove nothing."""
    from dotenv import dotenv_values

    for host in HOSTS:
        env = dotenv_values(suite.sandbox / host / ".env")
        for spec in SECRET_FIELDS:
            want = suite.env[spec.env] if host == OVERRIDDEN else suite.vault[spec.key]
            if spec.env in NOT_FOR_THE_APP:     # deploy's own ACL reload reads it, never the app
                want = ""
            assert env.get(spec.env) == want, f"{host}/.env: {spec.env} is not its canary"
        assert suite.canaries.found(env.get("REDIS_URL", "")), f"{host}: REDIS_URL lacks the password"
    # check mode and failing runs write nothing: their canaries are not in any .env either
    never = suite.canaries.all[suite.check_canaries_from:suite.check_canaries_to] + \
        suite.canaries.all[suite.failing_canaries_from:suite.failing_canaries_to]
    for host in HOSTS:
        body = (suite.sandbox / host / ".env").read_text(encoding="utf-8")
        assert not [c.slot for c in never if c.core in body], f"{host}/.env"


# ---- every run ended as intended, without a traceback ------------------------------------------

def test_every_run_ended_as_intended(suite):
    wrong = []
    for label, expect, ran in suite.runs:
        problems = []
        if ran.returncode is None:
            problems.append(f"killed after {ran.seconds:.0f}s")
        elif expect is not None and ran.returncode not in expect:
            problems.append(f"exit {ran.returncode}, expected {sorted(expect)}")
        problems += [f"printed {m!r}" for m in ran.tracebacks()]
        if problems:
            tail = suite.canaries.masked(ran.output)[-1500:]
            wrong.append(f"{label}: {'; '.join(problems)}\n{tail}")
    assert not wrong, "\n\n".join(wrong)
    # the diff surface was exercised: --check --diff showed .env's changed secrets, masked
    check = next(ran for label, _, ran in suite.runs if label.startswith("deploy --check --diff"))
    assert "<redacted, changed>" in check.stdout


# ---- zero canary hits ---------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_no_canary_in_any_output(suite, family):
    hits = {}
    for label, _, ran in suite.runs:
        for stream, text in (("stdout", ran.stdout), ("stderr", ran.stderr)):
            found = suite.canaries.found(text, family)
            if found:
                hits[f"{label} ({stream})"] = found
    assert len(suite.runs) >= 30
    assert not hits, json.dumps(hits, indent=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_canary_in_host_files(suite, family):
    hits, scanned = {}, 0
    for path in sorted(suite.sandbox.rglob("*")):
        rel = str(path.relative_to(suite.sandbox))
        if not path.is_file() or rel.split("/", 1)[-1] in SECRET_FILES:
            continue
        scanned += 1
        found = suite.canaries.found(path.read_bytes(), family)
        if found:
            hits[rel] = found
    assert scanned >= 4 * len(HOSTS), "the deploy wrote nothing: the scan proves nothing"
    assert not hits, json.dumps(hits, indent=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_canary_in_redis(suite, family):
    assert any("flashmm:config:" in k for k in suite.redis_dump), "the deploy seeded nothing"
    hits = {k: suite.canaries.found(k + " " + v, family) for k, v in suite.redis_dump.items()}
    hits = {k: v for k, v in hits.items() if v}
    assert not hits, json.dumps(hits, indent=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_canary_in_published_messages(suite, family):
    channels = {channel for channel, _ in suite.messages}
    assert set(CHANNELS) <= channels, f"nothing heard on {set(CHANNELS) - channels}"
    hits = [(channel, suite.canaries.found(data, family)) for channel, data in suite.messages]
    hits = [h for h in hits if h[1]]
    assert not hits, hits
