"""deploy.yml with the compose stack, against the real engine (the `docker_engine` fixture):
generated local inventories whose hosts each run their own compose project (the locally built
stand-in app and Redis images), asserting on what an operator sees: the play recap and its
messages, ``docker inspect`` (container ids and start times), the published API (/health,
/config) and Redis ports, ``flashmm-config explain``, the files.

Stacks: one module-scoped 2-host stack for the tests that leave it as they found it, one
module-scoped 1-host stack for the restart-scope tests (each compares with the state it found),
and stacks of their own for the compose failure and the first-deploy race.  Every project is
removed by a finalizer (``docker compose -p <project> down -v --remove-orphans``); project
names carry a random suffix and ports are chosen free at run time, so nothing collides with
inventories/local (flashmm-local-N, 18001-18003/16381-16383) or another run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import time

import pytest
import yaml
from cryptography.fernet import Fernet
from dotenv import dotenv_values

from flashmm_deploy.config import effective
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.inventory.inventory import Inventory
from flashmm_deploy.redis_ext.url import mask_url
from flashmm_deploy.config.schema import FIELDS
from stack_support import APP_USER, DEPLOY_USER, Stack, ok
from flashmm_deploy.cli.app import main as cli_main
from support import ROOT, flashmm_config, recap, snapshot_files, tool_env

pytestmark = pytest.mark.integration

SERVICES = {"flashmm", "redis"}
NON_SECRET = sorted(k for k, f in FIELDS.items() if not f.secret)
RUNTIME = sorted(k for k, f in FIELDS.items() if f.runtime and not f.secret)
SECRET_VARS = ("REDIS_PASSWORD", "SECRET_KEY", "API_AUTH_TOKEN", "ENCRYPTION_KEY")


# ---- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(docker_engine, tmp_path_factory):
    """Two hosts, deployed once; tests using it leave it as they found it."""
    stack = Stack(docker_engine, tmp_path_factory.mktemp("site"), hosts=2, label="site")
    try:
        stack.first = stack.deploy()
        yield stack
    finally:
        stack.down()


@pytest.fixture
def deployed(site) -> Stack:
    ok(site.first)
    return site


@pytest.fixture(scope="module")
def scoped(docker_engine, tmp_path_factory):
    """One host for the restart-scope tests (they change it)."""
    stack = Stack(docker_engine, tmp_path_factory.mktemp("scope"), hosts=1, label="scope")
    try:
        stack.first = stack.deploy()
        yield stack
    finally:
        stack.down()


@pytest.fixture
def scope_stack(scoped) -> Stack:
    ok(scoped.first)
    for host in scoped.hosts:
        assert_healthy(scoped, host)
    return scoped


# ---- helpers ----------------------------------------------------------------------------

def assert_healthy(stack: Stack, host: str) -> dict:
    containers = stack.containers(host)
    assert set(containers) == SERVICES, containers
    for service, c in containers.items():
        assert (c["status"], c["health"]) == ("running", "healthy"), (host, service, c)
    body = stack.wait_health(host)
    assert body["status"] == "ok" and body["environment"] == "local", body
    return containers


def expected_runtime(stack: Stack, host: str) -> dict[str, object]:
    """Redis key -> the value the inventory gives it (decoded JSON)."""
    config = host_validation.validate_host(Inventory(stack.inventory), host,
                                           require_secrets=True).config
    keys = effective.runtime_keys(effective.environment_file_layer(config))
    return {k: json.loads(v) for k, v in keys.items()}


def wait_config(stack: Stack, host: str, done, deadline_s: float = 20) -> dict:
    """/config values once ``done(values)`` holds (bounded); the last values otherwise."""
    deadline = time.monotonic() + deadline_s
    while True:
        status, body = stack.get(host, "/config")
        values = body.get("values", {}) if status == 200 else {}
        if (status == 200 and done(values)) or time.monotonic() > deadline:
            return values
        time.sleep(0.25)


def container_env(stack: Stack, container: str) -> dict[str, str]:
    out = stack.engine.docker("exec", container, "env").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def deployed_files(root) -> dict:
    """snapshot_files without deploy's own run bookkeeping (.flashmm/: the lock's holder
    note and the last run's record, rewritten by every run that takes the lock)."""
    return {p: v for p, v in snapshot_files(root).items()
            if "/.flashmm/" not in f"/{p}"}


def changed_files(before: dict, after: dict) -> set[str]:
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


def host_recap(stack: Stack, proc) -> dict[str, dict[str, int]]:
    """The recap of every inventory host (the play may also list localhost, for its
    controller-side checks); each must be there."""
    counts = recap(proc.stdout)
    assert set(stack.hosts) <= set(counts), proc.stdout[-3000:]
    return counts


def no_change_recap(stack: Stack, proc) -> None:
    counts = host_recap(stack, proc)
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts


def new_token() -> str:
    return secrets.token_urlsafe(32)


# ---- 1. up and healthy ------------------------------------------------------------------

def test_stack_comes_up_healthy_password_protected_and_seeded(deployed):
    counts = host_recap(deployed, deployed.first)
    assert all(counts[h]["failed"] == 0 and counts[h]["changed"] >= 1
               for h in deployed.hosts), counts
    password = deployed.password()
    for host in deployed.hosts:
        containers = assert_healthy(deployed, host)
        assert containers["flashmm"]["image"] == deployed.engine.standin_image
        assert containers["redis"]["image"] == deployed.engine.redis_image
        # the published Redis: no command without AUTH, the vault's password accepted
        assert deployed.raw_redis(host, ["PING"]) == [b"-NOAUTH Authentication required."]
        wrong = deployed.raw_redis(host, ["AUTH", APP_USER, "not-the-password"], ["PING"])
        assert wrong[0].startswith(b"-WRONGPASS"), wrong
        assert deployed.raw_redis(host, ["AUTH", APP_USER, password], ["PING"]) == \
            [b"+OK", b"+PONG"]
        # the runtime layer: in Redis, and in the app with layer "runtime"
        expected = expected_runtime(deployed, host)
        assert {FIELDS[k].redis_key for k in RUNTIME} == set(expected)
        client = deployed.redis(host)
        stored = {k: json.loads(v) for k, v in
                  ((k, client.get(k)) for k in client.scan_iter("flashmm:config:*"))}
        assert stored == expected
        by_key = {FIELDS[k].redis_key: k for k in RUNTIME}
        want = {by_key[rk]: {"value": v, "layer": "runtime"} for rk, v in expected.items()}
        values = wait_config(deployed, host,
                             lambda vals, want=want: all(vals.get(k) == w
                                                         for k, w in want.items()))
        assert {k: values.get(k) for k in want} == want


# ---- 2. rerun -----------------------------------------------------------------------------

def test_rerun_reports_no_change_and_restarts_nothing(deployed):
    ids, files = deployed.identities(), deployed_files(deployed.sandbox)
    assert all(set(v) == SERVICES for v in ids.values()), ids
    proc = ok(deployed.deploy())
    no_change_recap(deployed, proc)
    assert deployed.identities() == ids
    assert changed_files(files, deployed_files(deployed.sandbox)) == set()
    for host in deployed.hosts:
        assert_healthy(deployed, host)


# ---- 4. the app's /config is flashmm-config explain ---------------------------------------

def explain_args(stack: Stack, host: str, key: str) -> list[str]:
    return ["explain", str(stack.inventory), key, "--host", host, "--redis",
            stack.redis_url(host), "--json"]


def explain(stack: Stack, host: str, key: str) -> dict:
    """``flashmm-config explain --json`` as a process, the way an operator runs it."""
    proc = flashmm_config(*explain_args(stack, host, key))
    assert proc.returncode == 0, f"explain {key} --host {host}: {proc.stderr}{proc.stdout}"
    return json.loads(proc.stdout)


def explain_in_process(stack: Stack, host: str, key: str, monkeypatch) -> dict:
    """The same command through the entry point's ``main`` in this process, in the
    environment and directory the process gets: a process per key (~100) cost 30 s of CPU."""
    env = tool_env()
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n not in env]:    # as tool_env leaves them out
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.chdir(ROOT)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(explain_args(stack, host, key))
    assert code == 0, f"explain {key} --host {host}: {err.getvalue()}{out.getvalue()}"
    return json.loads(out.getvalue())


def without_password(value):
    """A URL as explain shows it: REDIS_URL's password exists in .env only, so the app's
    (masked) userinfo goes; anything else as it is."""
    if isinstance(value, str) and "://" in value:
        scheme, rest = mask_url(value).split("://", 1)
        return f"{scheme}://{rest.split(':***@', 1)[-1]}"
    if isinstance(value, list):
        return [without_password(v) for v in value]
    return value


def test_app_config_equals_flashmm_config_explain_for_every_public_key(deployed, monkeypatch):
    """Every public key on the first host; the runtime keys (the only ones whose value is
    per host: each host's own Redis) on every host.  One key of each host is also asked of
    ``flashmm-config`` as a process, which must answer alike."""
    first = deployed.hosts[0]
    checked = {h: NON_SECRET if h == first else RUNTIME for h in deployed.hosts}
    jobs = [(h, k) for h in deployed.hosts for k in checked[h]]
    cli = {job: explain_in_process(deployed, *job, monkeypatch) for job in jobs}
    for host in deployed.hosts:
        key = sorted(set(checked[host]) & set(RUNTIME))[0]
        assert explain(deployed, host, key) == cli[(host, key)], (host, key)
    mismatches = []
    for host in deployed.hosts:
        status, body = deployed.get(host, "/config")
        assert status == 200, body
        app = body["values"]
        assert set(app) == set(NON_SECRET)          # every public key, no secret one
        for key in checked[host]:
            c, a = cli[(host, key)], app[key]
            if c["value"] != without_password(a["value"]):
                mismatches.append(f"{host} {key}: app {a['value']!r} (layer {a['layer']}), "
                                  f"flashmm-config {c['value']!r} (layer {c['layer']})")
            if FIELDS[key].runtime and (a["layer"], c["layer"]) != ("runtime", "runtime"):
                mismatches.append(f"{host} {key}: layer app {a['layer']}, "
                                  f"flashmm-config {c['layer']} (expected runtime in both)")
    assert not mismatches, "\n".join(mismatches)


# ---- 5. --check --diff --------------------------------------------------------------------

def state(stack: Stack):
    return (snapshot_files(stack.sandbox), {h: stack.redis_snapshot(h) for h in stack.hosts},
            stack.identities())


def assert_unchanged(stack: Stack, before) -> None:
    files, keys, ids = state(stack)
    assert changed_files(before[0], files) == set()         # not even deploy's bookkeeping
    assert keys == before[1]
    assert ids == before[2]


def test_check_diff_changes_nothing_converged_or_after_an_inventory_change(deployed):
    before = state(deployed)
    proc = ok(deployed.deploy("--check", "--diff"))
    no_change_recap(deployed, proc)
    assert_unchanged(deployed, before)

    original = deployed.env_layer_path.read_text()
    try:
        deployed.edit_env_layer(lambda c: c["trading"].update(max_position_usdc=250.0,
                                                              spread_buffer_bps=9.5))
        proc = ok(deployed.deploy("--check", "--diff"))
        assert_unchanged(deployed, before)
        out = proc.stdout
        assert "-  max_position_usdc: 100.0" in out and "+  max_position_usdc: 250.0" in out
        assert "+  spread_buffer_bps: 9.5" in out
        assert "+TRADING_SPREAD_BUFFER_BPS='9.5'" in out
        for host in deployed.hosts:
            assert f"+++ after: redis 127.0.0.1:{deployed.redis_port(host)}/0" in out
        assert out.count("+flashmm:config:trading:max_position_usdc = 250.0") == len(deployed.hosts)
        counts = host_recap(deployed, proc)
        assert all(counts[h]["changed"] >= 1 and counts[h]["failed"] == 0
                   for h in deployed.hosts), counts
    finally:
        deployed.env_layer_path.write_text(original)
    for host in deployed.hosts:
        assert_healthy(deployed, host)


# ---- 3. restart scope ---------------------------------------------------------------------

def test_config_change_recreates_only_flashmm(scope_stack):
    host = scope_stack.hosts[0]
    before, files = scope_stack.containers(host), deployed_files(scope_stack.root(host))
    current = yaml.safe_load(files["config/environments/local.yml"][1])["trading"][
        "spread_buffer_bps"]
    new = current + 1.25
    scope_stack.edit_env_layer(lambda c: c["trading"].update(spread_buffer_bps=new))
    proc = ok(scope_stack.deploy())
    assert recap(proc.stdout)[host]["changed"] >= 1
    after = assert_healthy(scope_stack, host)
    assert after["flashmm"]["id"] != before["flashmm"]["id"]
    assert after["flashmm"]["started_at"] != before["flashmm"]["started_at"]
    assert (after["redis"]["id"], after["redis"]["started_at"]) == \
        (before["redis"]["id"], before["redis"]["started_at"])
    changed = changed_files(files, deployed_files(scope_stack.root(host)))
    assert "config/environments/local.yml" in changed and "redis/users.acl" not in changed
    values = scope_stack.get(host, "/config")[1]["values"]
    assert values["trading.spread_buffer_bps"]["value"] == new


def test_the_apps_healthcheck_passes_on_200_only(scope_stack):
    """The healthcheck the compose file gives the app (GET /health in an isolated python3):
    exit 0 while /health answers 200, 1 while it answers 503 (Redis stopped) and 1 when nothing
    listens; docker reports both healthy again once Redis is back."""
    stack, host = scope_stack, scope_stack.hosts[0]
    containers = stack.containers(host)
    app, redis_id = containers["flashmm"]["id"], containers["redis"]["id"]
    test = json.loads(stack.engine.docker("inspect", "-f", "{{json .Config.Healthcheck.Test}}",
                                          app).stdout)
    assert test[:4] == ["CMD", "python3", "-I", "-S"], test

    def check(*argv: str) -> int:
        return stack.engine.docker("exec", app, *argv, check=False).returncode

    assert check(*test[1:]) == 0
    nothing_listens = [re.sub(r"\('127\.0\.0\.1', \d+\)", "('127.0.0.1', 1)", a) for a in test[1:]]
    assert nothing_listens != test[1:] and check(*nothing_listens) == 1
    stack.engine.docker("stop", "--time", "5", redis_id)
    try:
        assert stack.get(host, "/health")[0] == 503
        assert check(*test[1:]) == 1
    finally:
        stack.engine.docker("start", redis_id)
    deadline = time.monotonic() + 60                 # bounded: checks run every 2 s
    while any(c["health"] != "healthy" for c in stack.containers(host).values()):
        assert time.monotonic() < deadline, stack.containers(host)
        time.sleep(0.5)
    assert_healthy(stack, host)


def test_runtime_only_change_restarts_nothing_and_reaches_the_running_app(scope_stack):
    """The seed's runtime layer is "updated without restart": a deploy that changes only
    runtime keys leaves .env, the compose file and every container alone; the running app
    has the new values from the seed's publish, and a later restart still sees them."""
    host = scope_stack.hosts[0]
    before_ids, files = scope_stack.identities()[host], deployed_files(scope_stack.root(host))
    trading = yaml.safe_load(files["config/environments/local.yml"][1])["trading"]
    new = {"trading.quote_frequency_hz": trading["quote_frequency_hz"] + 0.5,
           "trading.max_position_usdc": trading["max_position_usdc"] + 7.0}
    assert all(FIELDS[k].runtime for k in new)
    scope_stack.edit_env_layer(lambda c: c["trading"].update(
        quote_frequency_hz=new["trading.quote_frequency_hz"],
        max_position_usdc=new["trading.max_position_usdc"]))
    proc = ok(scope_stack.deploy())
    assert recap(proc.stdout)[host]["changed"] >= 1
    ended = time.monotonic()
    assert changed_files(files, deployed_files(scope_stack.root(host))) == \
        {"config/environments/local.yml", "redis/seed.lua"}
    assert scope_stack.identities()[host] == before_ids          # no container restarted

    def arrived(values):
        return all(values.get(k, {}).get("value") == v and values[k]["layer"] == "runtime"
                   for k, v in new.items())
    values = wait_config(scope_stack, host, arrived)
    print(f"runtime-only deploy: new values served {time.monotonic() - ended:.3f} s after "
          "the deploy ended")
    assert arrived(values), {k: values.get(k) for k in new}

    scope_stack.engine.docker("restart", "--time", "5", scope_stack.containers(host)[
        "flashmm"]["name"])
    scope_stack.wait_health(host)
    assert arrived(wait_config(scope_stack, host, arrived)), "lost by a restart"
    # and the file layer has them too, for a start while Redis is down
    config_file = (scope_stack.root(host) / "config/environments/local.yml").read_text()
    assert yaml.safe_load(config_file)["trading"]["quote_frequency_hz"] == \
        new["trading.quote_frequency_hz"]
    no_change_recap(scope_stack, ok(scope_stack.deploy()))


def test_env_file_only_change_recreates_only_flashmm(scope_stack):
    host = scope_stack.hosts[0]
    before, files = scope_stack.containers(host), deployed_files(scope_stack.root(host))
    token = new_token()
    scope_stack.set_secret("api_auth_token", token)
    proc = ok(scope_stack.deploy())
    assert recap(proc.stdout)[host]["changed"] >= 1
    assert changed_files(files, deployed_files(scope_stack.root(host))) == {".env"}
    after = assert_healthy(scope_stack, host)
    assert after["flashmm"]["id"] != before["flashmm"]["id"]
    assert (after["redis"]["id"], after["redis"]["started_at"]) == \
        (before["redis"]["id"], before["redis"]["started_at"])
    assert container_env(scope_stack, after["flashmm"]["name"])["API_AUTH_TOKEN"] == token


def test_redis_password_changed_outside_a_rotation_is_refused_and_nothing_changes(scope_stack):
    """Redis is never restarted for a password (that would drop every client): a vault whose
    deploy password the running Redis does not accept, and no previous one it does, is
    refused before a file changes, pointing at the rotation (tests/integration/test_rotation.py).
    (The app's password, deploy's user changes live: below.)"""
    host = scope_stack.hosts[0]
    before = scope_stack.containers(host)
    root = scope_stack.root(host)
    files = {p: (root / p).read_bytes() for p in (".env", "redis/users.acl")}
    old, new = scope_stack.deploy_password(), new_token()
    scope_stack.set_secret("redis_deploy_password", new)
    try:
        proc = scope_stack.deploy()
    finally:
        scope_stack.set_secret("redis_deploy_password", old)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "playbooks/rotate_secrets.yml -e rotate=redis" in " ".join(out.split())
    assert old not in out and new not in out
    assert {p: (root / p).read_bytes() for p in files} == files
    assert {s: c["id"] for s, c in scope_stack.containers(host).items()} == \
        {s: c["id"] for s, c in before.items()}
    assert scope_stack.raw_redis(host, ["AUTH", DEPLOY_USER, old], ["PING"]) == \
        [b"+OK", b"+PONG"]
    assert recap(ok(scope_stack.deploy()).stdout)[host]["changed"] == 0

    # the escape hatch for a lost password: Redis restarts from the new ACL file
    scope_stack.set_secret("redis_deploy_password", new)
    ok(scope_stack.deploy("-e", "flashmm_stack_redis_restart_on_acl_change=true"))
    after = assert_healthy(scope_stack, host)
    assert after["redis"]["id"] != before["redis"]["id"]
    assert scope_stack.raw_redis(host, ["AUTH", DEPLOY_USER, old])[0].startswith(b"-WRONGPASS")
    assert scope_stack.raw_redis(host, ["AUTH", DEPLOY_USER, new], ["PING"]) == \
        [b"+OK", b"+PONG"]
    # the app's password edited by hand: deploy's user gives Redis the new one live (the
    # rotation is still the way that keeps the old one valid until the app has restarted)
    app_old, app_new = scope_stack.password(), new_token()
    scope_stack.set_secret("redis_password", app_new)
    ok(scope_stack.deploy())
    now = assert_healthy(scope_stack, host)
    assert now["redis"]["id"] == after["redis"]["id"]
    assert scope_stack.raw_redis(host, ["AUTH", APP_USER, app_old])[0].startswith(b"-WRONGPASS")
    assert scope_stack.raw_redis(host, ["AUTH", APP_USER, app_new], ["PING"]) == \
        [b"+OK", b"+PONG"]
    # back to live reloads: Redis keeps running (once is enough: test_stack_check.py)
    assert recap(ok(scope_stack.deploy()).stdout)[host]["changed"] == 0
    assert scope_stack.containers(host)["redis"]["id"] == after["redis"]["id"]
    assert_healthy(scope_stack, host)


# ---- 7. secrets come from .env only ------------------------------------------------------

def test_secrets_reach_containers_only_from_the_env_file(scope_stack):
    """The app is recreated (a new secret key and API token) by a deploy whose shell holds
    other values for every secret variable: the containers get the vault's."""
    host = scope_stack.hosts[0]
    project = scope_stack.project(host)
    hostile_project = f"{project}-hostile"
    scope_stack.extra_projects.append(hostile_project)
    before = scope_stack.containers(host)
    scope_stack.set_secret("secret_key", new_token())
    scope_stack.set_secret("api_auth_token", new_token())
    hostile = {"REDIS_PASSWORD": "hostile-" + new_token(), "SECRET_KEY": "hostile-" + new_token(),
               "API_AUTH_TOKEN": "hostile-" + new_token(),
               "ENCRYPTION_KEY": Fernet.generate_key().decode(),
               "REDIS_URL": "redis://:hostile@127.0.0.1:1/0",
               "COMPOSE_PROJECT_NAME": hostile_project}
    ok(scope_stack.deploy(env=dict(scope_stack.env, **hostile)))
    after = assert_healthy(scope_stack, host)       # the app authenticated to Redis
    assert after["flashmm"]["id"] != before["flashmm"]["id"]
    assert after["redis"]["id"] == before["redis"]["id"]    # nothing of Redis changed

    vault = scope_stack.vault()
    dotenv = dotenv_values(scope_stack.root(host) / ".env")
    env = container_env(scope_stack, after["flashmm"]["name"])
    assert {v: env.get(v) for v in SECRET_VARS} == {v: dotenv[v] for v in SECRET_VARS}
    assert env["REDIS_URL"] == dotenv["REDIS_URL"]
    assert (env["REDIS_PASSWORD"], env["SECRET_KEY"], env["API_AUTH_TOKEN"]) == \
        (vault["redis_password"], vault["secret_key"], vault["api_auth_token"])
    leaked = [name for name, value in hostile.items()
              if name != "COMPOSE_PROJECT_NAME" and value in env.values()]
    assert not leaked, f"shell values reached the container: {leaked}"
    assert scope_stack.raw_redis(host, ["AUTH", APP_USER, hostile["REDIS_PASSWORD"]])[
        0].startswith(b"-WRONGPASS")
    assert scope_stack.raw_redis(host, ["AUTH", APP_USER, vault["redis_password"]]) == [b"+OK"]

    # the compose file's top-level name: `docker compose ps` in the host's directory (as an
    # operator would, no -p) and `-p <project>` both list exactly the deployed containers
    ids = {c["id"] for c in after.values()}
    root = scope_stack.root(host)
    in_dir = scope_stack.engine.docker("compose", "ps", "-q", cwd=root).stdout.split()
    by_name = scope_stack.engine.docker("compose", "-p", project, "ps", "-q",
                                        cwd=root).stdout.split()
    assert set(in_dir) == ids and set(by_name) == ids
    stray = scope_stack.engine.docker("ps", "-a", "-q", "--filter",
                                      f"label=com.docker.compose.project={hostile_project}")
    assert stray.stdout.split() == []


# ---- 6. a compose failure -----------------------------------------------------------------

@pytest.fixture
def own_stack(docker_engine, tmp_path):
    stack = Stack(docker_engine, tmp_path, hosts=1, label="fail")
    try:
        yield stack
    finally:
        stack.down()


def test_missing_image_fails_naming_it_and_the_running_stack_survives(own_stack):
    host = own_stack.hosts[0]
    ok(own_stack.deploy())
    before = assert_healthy(own_stack, host)
    image = "localhost/does-not-exist:1"
    proc = own_stack.deploy("-e", f"flashmm_stack_app_image={image}")
    assert proc.returncode != 0
    counts = recap(proc.stdout)
    assert counts[host]["failed"] == 1, counts
    # the failure is the stack task's, and nothing was replaced
    assert "fatal: [sandbox-01]" in proc.stdout
    assert "Bring the compose stack up" in proc.stdout.split("fatal: [sandbox-01]")[0]
    after = assert_healthy(own_stack, host)
    assert {s: (c["id"], c["started_at"]) for s, c in after.items()} == \
        {s: (c["id"], c["started_at"]) for s, c in before.items()}
    # what an operator reads must say which image could not be had
    seen = proc.stdout + proc.stderr
    assert image in seen, ("the failed play never names the image; its error lines:\n"
                           + "\n".join(line for line in seen.splitlines()
                                       if "ERROR" in line or "msg" in line
                                       or "Error" in line)[:3000])


def test_a_restart_lost_to_a_failed_run_is_done_by_the_next_one(own_stack):
    """A config change written by a run whose `up` then failed: the next run writes nothing
    new, yet recreates flashmm, because the running container's config fingerprint differs
    from the compose file's."""
    host = own_stack.hosts[0]
    ok(own_stack.deploy())
    before = assert_healthy(own_stack, host)
    own_stack.edit_env_layer(lambda c: c["trading"].update(spread_buffer_bps=9.75))
    failed = own_stack.deploy("-e", "flashmm_stack_app_image=localhost/does-not-exist:1")
    assert failed.returncode != 0
    assert assert_healthy(own_stack, host)["flashmm"]["id"] == before["flashmm"]["id"]
    files = deployed_files(own_stack.root(host))
    proc = ok(own_stack.deploy())
    assert changed_files(files, deployed_files(own_stack.root(host))) - {"docker-compose.yml"} \
        == set()                                           # the config file was already there
    after = assert_healthy(own_stack, host)
    assert after["flashmm"]["id"] != before["flashmm"]["id"]
    assert (after["redis"]["id"], after["redis"]["started_at"]) == \
        (before["redis"]["id"], before["redis"]["started_at"])
    values = own_stack.get(host, "/config")[1]["values"]
    assert values["trading.spread_buffer_bps"]["value"] == 9.75
    assert recap(proc.stdout)[host]["changed"] >= 1


# ---- 8. first deploys into a fresh parent directory never race ---------------------------

def test_first_deploy_of_three_hosts_into_a_fresh_directory_never_races(docker_engine,
                                                                        tmp_path):
    for attempt in range(3):
        stack = Stack(docker_engine, tmp_path / f"run{attempt}", hosts=3, label=f"race{attempt}",
                      sandbox_rel="not/yet/there/sandbox")
        assert not stack.sandbox.parent.exists()
        try:
            proc = stack.deploy()
            assert "File exists" not in proc.stdout + proc.stderr, proc.stdout[-4000:]
            ok(proc)
            counts = host_recap(stack, proc)
            assert all(c["failed"] == 0 for c in counts.values()), counts
            for host in stack.hosts:
                assert (stack.root(host) / ".env").is_file()
                assert_healthy(stack, host)
        finally:
            stack.down()
