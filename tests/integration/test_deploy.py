"""deploy.yml end to end without a stack: real ansible-playbook runs against local target
directories and a real redis-server, asserting on files, modes, Redis keys, PUBLISH messages
and the play recap.  (With the stack: tests/integration/test_stack.py.)"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import yaml
from cryptography.fernet import Fernet
from dotenv import dotenv_values

from flashmm_deploy.config import effective
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.secrets import secret_gen
from flashmm_deploy.inventory.inventory import Inventory
from flashmm_deploy.hostside.redis_acl import APP_USER, DEPLOY_USER
from flashmm_deploy.render.render import acl_file
from flashmm_deploy.plan.sandbox import make_local_inventory
from engine_support import free_port
from redis_support import SiteSnapshot
from support import (INVENTORIES, allocate_dbs, ansible_playbook, flashmm_config, read_vault,
                     recap, snapshot_files, snapshot_redis, start_redis, stop_redis, tool_env,
                     write_vault)

pytestmark = pytest.mark.integration
HOSTS = ("sandbox-01", "sandbox-02", "sandbox-03")
RUNTIME_KEYS = {"flashmm:config:trading:max_position_usdc", "flashmm:config:trading:quote_frequency_hz",
                "flashmm:config:ml:confidence_threshold", "flashmm:config:monitoring:alert_enabled"}


class Site:
    """A generated 3-host local inventory, its sandbox and its Redis databases."""

    def __init__(self, tmp: Path, server):
        self.server = server
        self.dbs = allocate_dbs(server, len(HOSTS))
        self.sandbox = tmp / "sandbox"
        self.inventory = make_local_inventory(INVENTORIES / "local", tmp / "inventory",
                                              hosts=len(HOSTS), redis_port=server.port,
                                              first_db=self.dbs[0], sandbox=self.sandbox)
        self.env = tool_env()

    def deploy(self, *args: str) -> subprocess.CompletedProcess:
        return ansible_playbook("deploy.yml", self.inventory, *args, env=self.env)

    def root(self, host: str) -> Path:
        return self.sandbox / host

    def snapshot(self):
        return snapshot_files(self.sandbox), snapshot_redis(self.server, self.dbs)

    def edit_env_layer(self, change) -> None:
        path = self.inventory / "group_vars" / "all" / "flashmm.yml"
        data = yaml.safe_load(path.read_text())
        change(data["flashmm_config"])
        path.write_text(yaml.safe_dump(data))

    def set_secret(self, name: str, value: str) -> None:
        path = self.inventory / "group_vars" / "all" / "vault.yml"
        data = read_vault(path)
        data["flashmm_secrets"][name] = value
        write_vault(path, data)

    def expected_env(self, host: str) -> dict[str, str]:
        inv = Inventory(self.inventory)
        config = host_validation.validate_host(inv, host, require_secrets=True).config
        # runtime keys are not in .env (the config file and Redis carry them: a change to
        # them restarts nothing)
        return {**effective.app_env(config), **effective.secret_env(config)}


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture
def site(tmp_path, redis_server) -> Site:
    return Site(tmp_path, redis_server)


@pytest.fixture(scope="module")
def deployed_snapshot(tmp_path_factory, redis_server) -> tuple[Site, SiteSnapshot]:
    """A deployed site as its first deploy left it (inventory, sandbox, Redis databases): one
    deploy for every test that changes it, where a deploy per test cost ~2 s of CPU each."""
    site = Site(tmp_path_factory.mktemp("deployed"), redis_server)
    ok(site.deploy())
    # the site's directory holds its inventory/ and sandbox/ only
    return site, SiteSnapshot(redis_server, site.dbs, [site.inventory.parent],
                              tmp_path_factory.mktemp("deployed-snapshot"))


@pytest.fixture
def deployed(deployed_snapshot) -> Site:
    """A site just after its first deploy, for a test to change as it likes."""
    site, snapshot = deployed_snapshot
    snapshot.restore()
    return site


@pytest.fixture(scope="module")
def deployed_once(tmp_path_factory, redis_server) -> Site:
    """One deploy shared by the tests that only read what it left (files, Redis): none of them
    may change the site."""
    site = Site(tmp_path_factory.mktemp("deployed-once"), redis_server)
    ok(site.deploy())
    return site


def test_deploy_writes_every_file_with_its_mode(deployed_once):
    for host in HOSTS:
        root = deployed_once.root(host)
        modes = {rel: mode for rel, (mode, _) in snapshot_files(root).items()}
        assert modes == {"config/environments/local.yml": 0o644, ".env": 0o600,
                         "docker-compose.yml": 0o644, "redis/seed.lua": 0o644,
                         "redis/users.acl": 0o600, ".flashmm/state.json": 0o600,
                         # the vault's secrets generation (secrets generate bumped it)
                         ".flashmm/generation.json": 0o600}
        assert (root / ".flashmm").stat().st_mode & 0o777 == 0o700


def test_config_file_is_the_validated_layer_without_secrets(deployed_once):
    text = (deployed_once.root("sandbox-02") / "config/environments/local.yml").read_text()
    data = yaml.safe_load(text)
    assert data["storage"]["redis"]["db"] == deployed_once.dbs[1]
    assert data["trading"]["max_position_usdc"] == 100.0
    assert "secrets" not in data


def test_env_file_reads_back_identically_with_python_dotenv(deployed_once):
    for host in HOSTS:
        read = dotenv_values(deployed_once.root(host) / ".env")
        assert read == deployed_once.expected_env(host)
        assert read["SECRET_KEY"] and read["REDIS_URL"].endswith(f"/{read['REDIS_DB']}")


def compose_config(root: Path) -> dict:
    """``docker compose config`` (Compose v2, the reference) of a rendered stack: parsing only,
    no engine needed.  It runs with a hostile shell environment: nothing may leak in."""
    env = dict(tool_env(), REDIS_PASSWORD="from-the-shell", SECRET_KEY="from-the-shell")
    proc = subprocess.run(["docker", "compose", "-f", str(root / "docker-compose.yml"),
                           "config", "--format", "json"], cwd=root, capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_compose_file_is_valid_for_compose_v2(deployed_once):
    root = deployed_once.root("sandbox-01")
    config = compose_config(root)
    assert config["name"] == "flashmm-test-sandbox-01"
    assert set(config["services"]) == {"flashmm", "redis"}     # influxdb off, grafana disabled
    flashmm = config["services"]["flashmm"]
    assert flashmm["depends_on"]["redis"]["condition"] == "service_healthy"
    env = deployed_once.expected_env("sandbox-01")
    assert flashmm["environment"]["SECRET_KEY"].replace("$$", "$") == env["SECRET_KEY"]
    assert "environment" not in config["services"]["redis"]    # Redis reads no env at all


def test_redis_holds_runtime_keys_seeded_record_and_version(deployed_once):
    for db in deployed_once.dbs:
        client = deployed_once.server.client(db)
        assert set(client.scan_iter("flashmm:config:*")) == RUNTIME_KEYS      # values only
        assert set(client.scan_iter("flashmm:meta:*")) == {"flashmm:meta:seeded",
                                                            "flashmm:meta:version"}
        assert json.loads(client.get("flashmm:config:trading:max_position_usdc")) == 100.0
        assert json.loads(client.get("flashmm:config:monitoring:alert_enabled")) is True
        assert client.get("flashmm:meta:version") == "1"


def test_deploy_publishes_each_changed_key_as_the_seeds_listener_expects(site):
    """One message per changed key on flashmm:config:updates, its dotted name as the data
    (what the seed's listener passes to reload_key); one JSON summary per host on
    flashmm:meta:updates."""
    pubsub = site.server.client().pubsub()
    pubsub.subscribe("flashmm:config:updates", "flashmm:meta:updates")
    for _ in range(2):
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    ok(site.deploy())
    messages, deadline = [], time.monotonic() + 10
    while len(messages) < 5 * len(HOSTS) and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg and msg["type"] == "message":
            messages.append((msg["channel"], msg["data"]))
    pubsub.close()
    dotted = sorted(k.removeprefix("flashmm:config:").replace(":", ".") for k in RUNTIME_KEYS)
    keys = [d for c, d in messages if c == "flashmm:config:updates"]
    assert sorted(keys) == sorted(dotted * len(HOSTS))
    summaries = [json.loads(d) for c, d in messages if c == "flashmm:meta:updates"]
    assert len(summaries) == len(HOSTS)
    assert all(s["version"] == 1 and set(s["changed"]) == RUNTIME_KEYS for s in summaries)


def test_second_deploy_reports_no_change(deployed):
    before = deployed.snapshot()
    counts = recap(ok(deployed.deploy()).stdout)
    assert set(counts) == set(HOSTS) | {"localhost"}     # localhost: the empty-inventory check
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts
    assert deployed.snapshot() == before


def test_check_diff_shows_the_change_and_writes_nothing(deployed):
    deployed.edit_env_layer(lambda c: c["trading"].update(max_position_usdc=250.0))
    deployed.set_secret("api_auth_token", secrets.token_urlsafe(40))
    before = deployed.snapshot()
    proc = ok(deployed.deploy("--check", "--diff"))
    assert deployed.snapshot() == before
    out = proc.stdout
    assert "-  max_position_usdc: 100.0" in out and "+  max_position_usdc: 250.0" in out
    assert "TRADING_MAX_POSITION_USDC" not in out       # a runtime key: not in .env
    # the seed script's own diff (not masked away) and the Redis keys that would change
    assert '+  {"flashmm:config:trading:max_position_usdc", "250.0"},' in out
    assert "+flashmm:config:trading:max_position_usdc = 250.0" in out
    assert "+API_AUTH_TOKEN='<redacted, changed>'" in out
    assert "-API_AUTH_TOKEN='<redacted>'" in out
    assert all(c["changed"] >= 1 for h, c in recap(out).items() if h != "localhost")


def test_operator_override_is_kept_and_reported_unless_enforced(deployed):
    client = deployed.server.client(deployed.dbs[0])
    client.set("flashmm:config:trading:quote_frequency_hz", "2.5")
    deployed.edit_env_layer(lambda c: c["trading"].update(quote_frequency_hz=3.0))
    proc = ok(deployed.deploy())
    assert client.get("flashmm:config:trading:quote_frequency_hz") == "2.5"
    warnings = proc.stdout + proc.stderr   # Ansible prints module warnings on stderr
    assert "runtime override kept" in warnings and "quote_frequency_hz" in warnings
    # the other hosts had no override: they take the new inventory value
    assert deployed.server.client(deployed.dbs[1]).get("flashmm:config:trading:quote_frequency_hz") == "3.0"
    ok(deployed.deploy("-e", "flashmm_runtime_mode=enforce"))
    assert client.get("flashmm:config:trading:quote_frequency_hz") == "3.0"


INVALID = {
    "range": (lambda c: c["trading"].update(max_position_usdc=100001), "trading.max_position_usdc"),
    "type": (lambda c: c["trading"].update(max_quote_levels="three"), "trading.max_quote_levels"),
    "unknown key": (lambda c: c["trading"].update(max_postion_usdc=5.0),
                    "did you mean trading.max_position_usdc"),
    "cross-field": (lambda c: c["sei"].update(chain_id="pacific-1"), "sei.chain_id"),
}


@pytest.mark.parametrize("rule", sorted(INVALID))
def test_invalid_inventory_fails_and_touches_no_host(deployed, rule):
    change, path = INVALID[rule]
    deployed.edit_env_layer(lambda c: c["trading"].update(max_position_usdc=300.0))
    deployed.edit_env_layer(change)
    before = deployed.snapshot()
    proc = deployed.deploy()
    assert proc.returncode != 0
    assert path in proc.stdout
    assert "group_vars/all/flashmm.yml" in proc.stdout
    assert deployed.snapshot() == before
    assert set(recap(proc.stdout)) <= set(HOSTS) | {"localhost"}
    assert "Write the FlashMM files" not in proc.stdout


def test_secret_canary_never_leaves_the_env_file(site):
    canary = "CANARY" + secrets.token_urlsafe(40)
    site.set_secret("secret_key", canary)
    first = ok(site.deploy("-vvv"))
    canary2 = "CANARY" + secrets.token_urlsafe(40)
    site.set_secret("secret_key", canary2)
    check = ok(site.deploy("--check", "--diff", "-vvv"))
    for proc in (first, check):
        for text in (proc.stdout, proc.stderr):
            assert canary not in text and canary2 not in text
    assert "SECRET_KEY='<redacted, changed>'" in check.stdout
    holders = [rel for rel, (_, data) in snapshot_files(site.sandbox).items() if canary.encode() in data]
    assert sorted(holders) == sorted(f"{h}/.env" for h in HOSTS)
    for db in site.dbs:
        assert not any(canary in str(v) for v in snapshot_redis(site.server, [db])[db].values())


def test_each_host_is_validated_exactly_once_per_run(site, tmp_path):
    """One controller pass: nothing validates a host again (the write, the seed, the env)."""
    trace = tmp_path / "validations.txt"
    site.env = tool_env(FLASHMM_TRACE_VALIDATIONS=str(trace))
    ok(site.deploy())
    hosts = [line.split()[1] for line in trace.read_text().splitlines()]
    assert sorted(hosts) == sorted(HOSTS)
    trace.unlink()
    ok(site.deploy("--check", "--diff"))
    assert sorted(line.split()[1] for line in trace.read_text().splitlines()) == sorted(HOSTS)


def stand_in_secrets(inv: Path) -> dict[str, str]:
    """Fill every secret the environment needs with a well-formed stand-in holding '$' and
    '#', which compose must not interpolate or cut (a plain vault: Ansible reads both)."""
    vault = inv / "group_vars" / "all" / "vault.yml"
    names = secret_gen.needed_secret_names(Inventory(inv))
    values = {n: "Sx$y#" + secrets.token_urlsafe(32) for n in names}
    values["encryption_key"] = Fernet.generate_key().decode()
    if "alert_webhook_url" in values:
        values["alert_webhook_url"] = "https://hooks.example/" + secrets.token_urlsafe(20)
    vault.write_text(yaml.safe_dump({"flashmm_secrets": values}))
    return values


@pytest.mark.parametrize("environment", ["development", "testnet", "production"])
def test_every_environment_renders_a_valid_compose_file(tmp_path, environment):
    inv = tmp_path / environment
    shutil.copytree(INVENTORIES / environment, inv)
    values = stand_in_secrets(inv)
    root = tmp_path / "root"
    ok(ansible_playbook("deploy.yml", inv, "-e", "ansible_connection=local",
                        "-e", f"flashmm_root={root}", "-e", "flashmm_compose_up=false",
                        "-e", "ansible_python_interpreter=/usr/bin/python3",
                        "-e", "flashmm_plan_preflight=none",      # no outside world here
                        "--skip-tags", "flashmm_runtime"))
    services = compose_config(root)["services"]
    assert ("grafana" in services) is (environment != "development")
    assert "influxdb" in services
    compose_text = (root / "docker-compose.yml").read_text()
    assert not any(value in compose_text for value in values.values())
    acl = (root / "redis" / "users.acl").read_text()
    if environment == "production":
        digest = hashlib.sha256(values["redis_password"].encode()).hexdigest()
        deploy = hashlib.sha256(values["redis_deploy_password"].encode()).hexdigest()
        assert acl.startswith("user default off ")
        assert f"user {APP_USER} on #{digest} " in acl
        assert f"user {DEPLOY_USER} on #{deploy} " in acl
        assert values["redis_password"] not in acl
        # InfluxDB reads its first-start secrets from its own env file, never from the shell
        assert services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"].replace(
            "$$", "$") == values["influxdb_token"]
        assert (root / "influxdb" / "influxdb.env").stat().st_mode & 0o777 == 0o600
    else:
        assert "user default on nopass" in acl


def test_deploy_refuses_missing_secrets_before_touching_a_host(tmp_path):
    """Testnet without its vault (made by the team with `secrets init`): validate warns,
    deploy must refuse."""
    inv = tmp_path / "testnet"
    shutil.copytree(INVENTORIES / "testnet", inv)
    root = tmp_path / "root"
    proc = ansible_playbook("deploy.yml", inv, "-e", "ansible_connection=local",
                            "-e", f"flashmm_root={root}",
                            "-e", "ansible_python_interpreter=/usr/bin/python3")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "secrets.cambrian_api_key: is not available" in out
    assert "set flashmm_secrets.cambrian_api_key in group_vars/all/vault.yml" in out
    assert not root.exists()


def test_deploy_opens_the_testnet_vault_with_its_vault_id_and_refuses_placeholders(tmp_path):
    inv = tmp_path / "testnet"
    shutil.copytree(INVENTORIES / "testnet", inv)
    password = tmp_path / "testnet.pass"
    password.write_text(secrets.token_urlsafe(24) + "\n")
    made = flashmm_config("--vault-id", f"testnet@{password}", "secrets", "init", str(inv))
    assert made.returncode == 0, made.stderr
    root = tmp_path / "root"
    args = ("-e", "ansible_connection=local", "-e", f"flashmm_root={root}",
            "-e", "ansible_python_interpreter=/usr/bin/python3",
            "-e", "flashmm_plan_preflight=none")      # no outside world here
    closed = ansible_playbook("deploy.yml", inv, *args)
    assert closed.returncode != 0 and "Decryption failed" in \
        closed.stdout + closed.stderr, closed.stdout[-2000:] + closed.stderr[-2000:]
    opened = ansible_playbook("deploy.yml", inv, "--vault-id", f"testnet@{password}", *args)
    out = opened.stdout + opened.stderr
    assert opened.returncode != 0
    assert "secrets.cambrian_api_key: is still a placeholder" in out
    assert "group_vars/all/vault.yml" in out
    assert "secrets.secret_key" not in out          # generated by init: set and valid
    assert not root.exists()


def test_tags_select_seeding_or_skip_it_and_validation_always_runs(deployed):
    files_before = snapshot_files(deployed.sandbox)
    deployed.edit_env_layer(lambda c: c["trading"].update(max_position_usdc=400.0))
    client = deployed.server.client(deployed.dbs[0])

    ok(deployed.deploy("--skip-tags", "flashmm_runtime"))
    assert snapshot_files(deployed.sandbox) != files_before          # files written
    assert json.loads(client.get("flashmm:config:trading:max_position_usdc")) == 100.0

    files_after = snapshot_files(deployed.sandbox)
    deployed.edit_env_layer(lambda c: c["trading"].update(max_position_usdc=500.0))
    ok(deployed.deploy("--tags", "flashmm_runtime"))
    assert json.loads(client.get("flashmm:config:trading:max_position_usdc")) == 500.0
    assert snapshot_files(deployed.sandbox) == files_after           # only Redis touched

    deployed.edit_env_layer(lambda c: c["trading"].update(max_position_usdc=-1))
    proc = deployed.deploy("--tags", "flashmm_runtime")
    assert proc.returncode != 0 and "trading.max_position_usdc" in proc.stdout
    assert json.loads(client.get("flashmm:config:trading:max_position_usdc")) == 500.0


def test_check_mode_on_a_fresh_host_creates_nothing(site):
    proc = ok(site.deploy("--check", "--diff"))
    assert not site.sandbox.exists()
    assert all(not keys for keys in snapshot_redis(site.server, site.dbs).values())
    assert "+API_PORT='8000'" in proc.stdout       # the diff says what would be
    assert all(c["changed"] >= 1 for h, c in recap(proc.stdout).items() if h != "localhost")


def test_password_protected_redis_is_seeded_and_the_password_never_printed(tmp_path):
    password = "CANARY-redis-" + secrets.token_urlsafe(24)
    deploy_password = "CANARY-deploy-" + secrets.token_urlsafe(24)
    # a Redis deploy does not manage: it loads the users deploy renders (redis/users.acl)
    acl = tmp_path / "users.acl"
    acl.write_text(acl_file([password], [deploy_password]))
    server = start_redis(tmp_path / "redis", "--aclfile", str(acl))
    try:
        sandbox = tmp_path / "sandbox"
        inv = make_local_inventory(INVENTORIES / "local", tmp_path / "inventory", hosts=2,
                                   redis_port=server.port, first_db=1, with_secrets=False,
                                   sandbox=sandbox)
        env_file = inv / "group_vars" / "all" / "flashmm.yml"
        data = yaml.safe_load(env_file.read_text())
        data["flashmm_config"]["storage"]["redis"]["password_required"] = True
        env_file.write_text(yaml.safe_dump(data))
        vault = inv / "group_vars" / "all" / "vault.yml"
        vault.write_text(yaml.safe_dump({"flashmm_secrets": {
            "redis_password": password, "redis_deploy_password": deploy_password,
            "secret_key": secrets.token_urlsafe(40),
            "api_auth_token": secrets.token_urlsafe(40),
            "encryption_key": Fernet.generate_key().decode()}}))
        proc = ok(ansible_playbook("deploy.yml", inv, "-vvv", "--diff"))
        assert password not in proc.stdout + proc.stderr
        assert deploy_password not in proc.stdout + proc.stderr
        client = redis.Redis(host=server.host, port=server.port, db=1, username=APP_USER,
                             password=password, decode_responses=True, socket_timeout=5)
        assert client.get("flashmm:meta:version") == "1"
        env = dotenv_values(sandbox / "sandbox-01" / ".env")
        assert env["REDIS_PASSWORD"] == password
        # the seed's app reads only REDIS_URL: it carries the password, percent-encoded
        assert env["REDIS_URL"] == \
            f"redis://{APP_USER}:{quote(password, safe='')}@127.0.0.1:{server.port}/1"
        assert not [rel for rel, (_, body) in snapshot_files(sandbox).items()
                    if deploy_password.encode() in body]          # deploy's: on no host file
        holders = [rel for rel, (_, body) in snapshot_files(sandbox).items() if password.encode() in body]
        assert sorted(holders) == ["sandbox-01/.env", "sandbox-02/.env"]
    finally:
        stop_redis(server)


# ---- nothing half-written, nothing stale, one run at a time --------------------------------

def test_a_dead_redis_fails_the_host_before_any_file_is_written(deployed):
    """No stack: the write call checks the seed first; with Redis gone nothing changes."""
    deployed.edit_env_layer(lambda c: c["trading"].update(spread_buffer_bps=7.5))
    before = deployed.snapshot()
    dead = free_port()
    proc = deployed.deploy("-e", f"flashmm_runtime_redis_port={dead}")
    assert proc.returncode != 0
    assert f"127.0.0.1:{dead}" in proc.stdout and "no file changed" in proc.stdout
    assert deployed.snapshot() == before


def test_a_changed_environment_removes_the_previous_environment_file(deployed):
    root = deployed.root("sandbox-01")
    assert (root / "config/environments/local.yml").exists()
    deployed.edit_env_layer(lambda c: c["app"].update(environment="development"))
    proc = ok(deployed.deploy("--diff"))
    assert (root / "config/environments/development.yml").exists()
    assert not (root / "config/environments/local.yml").exists()
    assert "config/environments/local.yml" in proc.stdout and "(removed)" in proc.stdout
    assert all(c["changed"] == 0 for c in recap(ok(deployed.deploy()).stdout).values())


def test_two_deploys_at_once_serialise_and_leave_one_consistent_state(deployed):
    """Two runs of different configurations started together: each host's lock makes them
    take turns; every host ends with one run's files and the same run's runtime layer."""
    import threading
    second = deployed.inventory.parent / "inventory-b"
    shutil.copytree(deployed.inventory, second)
    path = second / "group_vars" / "all" / "flashmm.yml"
    data = yaml.safe_load(path.read_text())
    data["flashmm_config"]["trading"]["max_position_usdc"] = 321.0
    path.write_text(yaml.safe_dump(data))
    results = {}

    def run(name, inv):
        results[name] = ansible_playbook("deploy.yml", inv, env=deployed.env)

    threads = [threading.Thread(target=run, args=("a", deployed.inventory)),
               threading.Thread(target=run, args=("b", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    for proc in results.values():
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 or "is held by deploy run" in out, out[-3000:]
    for host, db in zip(HOSTS, deployed.dbs):
        file_value = yaml.safe_load((deployed.root(host) / "config/environments/local.yml")
                                    .read_text())["trading"]["max_position_usdc"]
        redis_value = json.loads(deployed.server.client(db).get(
            "flashmm:config:trading:max_position_usdc"))
        assert file_value == redis_value, (host, file_value, redis_value)


def test_a_full_disk_leaves_the_previous_files_and_a_clear_error(deployed, tmp_path):
    """A tiny tmpfs as one host's root (when this machine lets us mount one)."""
    import subprocess as sp
    mount = tmp_path / "tiny"
    mount.mkdir()
    if sp.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
              capture_output=True).returncode != 0:
        pytest.fail("cannot mount a tmpfs here: run the suite as root (CI does)")
    try:
        shutil.copytree(deployed.root("sandbox-01"), mount / "sandbox-01")
        inv = deployed.inventory
        hosts = yaml.safe_load((inv / "hosts.yml").read_text())
        hosts["all"]["children"]["flashmm"]["hosts"]["sandbox-01"]["flashmm_root"] = \
            str(mount / "sandbox-01")
        (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
        ok(deployed.deploy("--limit", "sandbox-01"))
        before = snapshot_files(mount)
        try:                                                    # fill the disk up
            with open(mount / "filler", "wb", buffering=0) as filler:
                for _ in range(64):
                    filler.write(b"x" * 1024)
        except OSError:
            pass
        deployed.edit_env_layer(lambda c: c["app"].update(name="N" * 3000))
        proc = deployed.deploy("--limit", "sandbox-01")
        assert proc.returncode != 0
        assert "No space left on device" in proc.stdout and "no file changed" in proc.stdout
        after = snapshot_files(mount)
        after.pop("filler")
        assert after == before
    finally:
        sp.run(["umount", str(mount)], capture_output=True)
