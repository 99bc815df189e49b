"""The stand-in app as a real process against a real password-protected redis-server, and as
its image on the Docker engine: layers with provenance, live runtime updates, a Redis outage
and its end, the encrypted-records counts, fast start and stop, and no secret anywhere.

Every wait is bounded; the app only ever listens on 127.0.0.1 (or inside a container)."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from engine_support import DockerEngine, free_port
from flashmm_config.layers import REQUIRED_ENV, load_fields
from support import RedisServer, start_redis, stop_redis

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIELDS = load_fields()
ENVIRONMENT = "testnet"


def canaries() -> dict[str, str]:
    """A distinct, recognisable value for every secret variable (Fernet keys where needed)."""
    out = {}
    for field in FIELDS.values():
        if field.secret:
            out[field.env] = (Fernet.generate_key().decode() if "ENCRYPTION_KEY" in field.env
                              else f"canary-{field.env.lower()}-{secrets.token_hex(6)}")
    return out


def write_config(config_dir: Path, data: dict) -> Path:
    path = config_dir / "environments" / f"{ENVIRONMENT}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


FILE_LAYER = {"trading": {"max_position_usdc": 150, "quote_frequency_hz": 2.0,
                          "max_quote_levels": 2},
              "app": {"name": "FromFile"},
              "sei": {"network": "testnet"}}


def app_env(secret_values: dict[str, str], *, redis_url: str, api_port: int,
            config_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """What a deployed .env gives the app (a subset), plus the test-only settings."""
    env = {name: "" for name in REQUIRED_ENV}
    env.update(secret_values)
    env.update({"ENVIRONMENT": ENVIRONMENT, "SEI_CHAIN_ID": "atlantic-2",
                "SEI_RPC_URL": "https://rpc.example", "SEI_WS_URL": "wss://rpc.example/ws",
                "REDIS_URL": redis_url, "API_HOST": "127.0.0.1", "API_PORT": str(api_port),
                "TRADING_MAX_QUOTE_LEVELS": "4", "INFLUXDB_URL": ""})
    if config_dir is not None:
        env["FLASHMM_CONFIG_DIR"] = str(config_dir)
    env.update(extra)
    return env


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(predicate, timeout: float, step: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes; returns the
    value and the seconds it took (None, timeout when it never did)."""
    started = time.monotonic()
    while True:
        try:
            value = predicate()
        except (OSError, ValueError):
            value = None
        elapsed = time.monotonic() - started
        if value:
            return value, elapsed
        if elapsed > timeout:
            return None, elapsed
        time.sleep(step)


class AppProcess:
    """``python -m flashmm_deploy.standin`` from src/, its output collected line by line."""

    def __init__(self, env: dict[str, str], cwd: Path, port: int) -> None:
        self.port = port
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flashmm_deploy.standin"], cwd=cwd,
            env={**env, "PYTHONPATH": str(ROOT / "src")}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.bodies: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, lines), daemon=True)
                         for s, lines in ((self.proc.stdout, self.stdout),
                                          (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def get(self, path: str) -> tuple[int, dict]:
        status, body = http_get(self.port, path)
        self.bodies.append(json.dumps(body))
        return status, body

    def value(self, key: str) -> dict:
        return self.get("/config")[1]["values"][key]

    def wait_health(self, status: int, timeout: float) -> float:
        found, elapsed = wait_for(lambda: self.get("/health")[0] == status, timeout)
        assert found, f"/health never answered {status} within {timeout} s:\n{self.output()}"
        return elapsed

    def wait_log(self, text: str, timeout: float = 5.0) -> None:
        found, _ = wait_for(lambda: any(text in line for line in self.stdout), timeout)
        assert found, f"no log line with {text!r} within {timeout} s:\n{self.output()}"

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[int | None, float]:
        """Send ``sig``; returns (exit code or None when it did not exit, seconds)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.monotonic() - started
        self.kill()
        return code, elapsed

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for reader in self._readers:
            reader.join(5)


def start_redis_on(port: int, tmp: Path, password: str) -> RedisServer:
    """A new redis-server on a given port (the same port after a crash), password-protected."""
    return start_redis(tmp, "--requirepass", password, port=port,
                       what="redis-server (started again)")


@pytest.fixture
def protected_redis(tmp_path):
    password = secrets.token_urlsafe(18)
    server = start_redis(tmp_path / "redis", "--requirepass", password)
    servers = [server]
    yield server, password, servers
    for s in servers:
        stop_redis(s)


@pytest.fixture
def running(tmp_path):
    """Start apps with ``running(env)``; each is stopped (killed if need be) afterwards."""
    apps = []

    def start(env: dict[str, str], port: int) -> AppProcess:
        app = AppProcess(env, tmp_path, port)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.kill()


def assert_no_secret(text: str, secret_values) -> None:
    for value in secret_values:
        assert value not in text, "a secret value leaked"


def test_layers_updates_outage_and_shutdown(tmp_path, protected_redis, running):
    server, password, servers = protected_redis
    client = server.client(password=password)
    secret_values = {**canaries(), "REDIS_PASSWORD": password}
    new_key, old_key = secret_values["ENCRYPTION_KEY"], secret_values["OLD_ENCRYPTION_KEY"]
    client.set("flashmm:config:ml:confidence_threshold", "0.75")
    client.set("flashmm:config:api:port", "1")                 # not a runtime key: ignored
    client.set("flashmm:meta:version", "5")
    client.set("flashmm:secure:a", Fernet(new_key).encrypt(b"alpha").decode())
    client.set("flashmm:secure:b", Fernet(new_key).encrypt(b"beta").decode())
    client.set("flashmm:secure:c", Fernet(old_key).encrypt(b"gamma").decode())
    client.set("flashmm:secure:d", "not a token")
    config_dir = tmp_path / "config"
    write_config(config_dir, FILE_LAYER)
    port = free_port()
    env = app_env(secret_values, api_port=port, config_dir=config_dir,
                  redis_url=f"redis://:{password}@127.0.0.1:{server.port}/0")
    app = running(env, port)

    ready = app.wait_health(200, timeout=10)
    assert ready < 5, f"ready only after {ready:.2f} s"
    # /health may answer (and the version show) a moment before the runtime layer's first
    # scan is applied: seen once under a load of 30 (noted as a defect to fix in the library)
    wait_for(lambda: app.value("ml.confidence_threshold")["layer"] == "runtime", 5)
    status, config = app.get("/config")
    assert status == 200
    assert (config["environment"], config["config_version"]) == (ENVIRONMENT, 5)
    values = config["values"]
    assert values["trading.max_position_usdc"] == {"value": 150.0, "layer": "file"}
    assert values["app.name"] == {"value": "FromFile", "layer": "file"}
    assert values["trading.max_quote_levels"] == {"value": 4, "layer": "env"}
    assert values["ml.confidence_threshold"] == {"value": 0.75, "layer": "runtime"}
    assert values["api.port"] == {"value": port, "layer": "env"}
    assert values["storage.influxdb.url"] == {"value": None, "layer": "default"}
    assert values["app.version"] == {"value": "1.0.0", "layer": "default"}
    assert values["storage.redis.url"]["value"] == f"redis://:***@127.0.0.1:{server.port}/0"
    assert not any(key.startswith("secrets.") for key in values)
    app.wait_log("ignoring flashmm:config:api:port: not a runtime config key")

    # a runtime update, announced as deploy's seed announces it
    app.wait_log("subscribed to flashmm:config:updates")
    client.set("flashmm:config:trading:quote_frequency_hz", "2.5")
    assert client.publish("flashmm:config:updates", "trading.quote_frequency_hz") == 1
    app.wait_log("config update: trading.quote_frequency_hz = 2.5")
    assert app.value("trading.quote_frequency_hz") == {"value": 2.5, "layer": "runtime"}
    client.publish("flashmm:meta:updates", json.dumps({"version": 6, "changed": 1}))
    app.wait_log('meta update: {"changed":1,"version":6}')

    assert app.get("/secure") == (200, {"records": 4, "readable": 3, "unreadable": 1,
                                        "readable_with_old_key_only": 1, "key_problem": None})
    stats = app.get("/stats")[1]
    assert stats["redis_ops"] > 0 and stats["redis_failures"] == 0
    assert stats["reconnects"] == 0 and stats["updates_received"] == 1

    # Redis dies: unhealthy within 2 s, the last known values still served
    server.process.kill()
    server.process.wait(5)
    down = app.wait_health(503, timeout=3)
    assert down < 2, f"/health stayed 200 for {down:.2f} s after redis died"
    assert app.get("/health")[1]["reason"].startswith("redis unavailable")
    assert app.value("trading.quote_frequency_hz") == {"value": 2.5, "layer": "runtime"}
    assert app.get("/secure")[0] == 503
    app.wait_log("redis unavailable")

    # Redis is back (empty) on the same port: healthy again, reconnect counted, runtime
    # layer re-scanned (the override is gone, the file value is back)
    servers.append(start_redis_on(server.port, tmp_path / "redis2", password))
    app.wait_health(200, timeout=10)
    stats = app.get("/stats")[1]
    assert stats["reconnects"] >= 1 and stats["redis_failures"] >= 1
    app.wait_log("redis reconnected")
    rescanned, _ = wait_for(lambda: app.value("trading.quote_frequency_hz")
                            == {"value": 2.0, "layer": "file"}, 5)
    assert rescanned, app.output()
    app.wait_log("resubscribed to flashmm:config:updates")

    code, stopped = app.stop(signal.SIGTERM, timeout=5)
    assert code == 0 and stopped < 2, (code, stopped, app.output())
    assert app.stdout[-1].endswith("stopped\n")
    assert "Traceback" not in app.output()
    assert_no_secret(app.output() + "\n".join(app.bodies), secret_values.values())


def test_file_reload_keeps_the_last_good_configuration(tmp_path, protected_redis, running):
    server, password, _ = protected_redis
    config_dir = tmp_path / "config"
    path = write_config(config_dir, FILE_LAYER)
    port = free_port()
    app = running(app_env(canaries(), api_port=port, config_dir=config_dir,
                          redis_url=f"redis://:{password}@127.0.0.1:{server.port}/0"), port)
    app.wait_health(200, timeout=10)
    path.write_text("trading:\n  max_position_usdc: lots\n")
    app.wait_log("config file rejected, keeping the last good", timeout=5)
    assert app.value("trading.max_position_usdc") == {"value": 150.0, "layer": "file"}
    assert app.get("/health")[0] == 200
    path.write_text("trading:\n  max_position_usdc: 175.5\n")
    app.wait_log("reloaded: ", timeout=5)
    assert app.value("trading.max_position_usdc") == {"value": 175.5, "layer": "file"}
    assert app.value("app.name") == {"value": "FlashMM", "layer": "default"}
    code, _ = app.stop(signal.SIGINT)
    assert code == 0


@pytest.mark.parametrize("case", ["missing required", "bad file", "bad env", "bad url"])
def test_refuses_to_start_on_a_configuration_problem(tmp_path, running, case):
    secret_values = canaries()
    config_dir = tmp_path / "config"
    write_config(config_dir, {"trading": {"max_quote_levels": "many"}} if case == "bad file"
                 else FILE_LAYER)
    port = free_port()
    env = app_env(secret_values, api_port=port, config_dir=config_dir,
                  redis_url="redis://:pw-canary-url-1234@127.0.0.1:notaport/0"
                  if case == "bad url" else "redis://127.0.0.1:1/0")
    if case == "missing required":
        del env["CAMBRIAN_SECRET_KEY"], env["SEI_WS_URL"]
    if case == "bad env":
        env["API_PORT"] = "eighty"
    app = running(env, port)
    code = app.proc.wait(10)
    app.kill()
    expected = {"missing required": "CAMBRIAN_SECRET_KEY, SEI_WS_URL",
                "bad file": "trading.max_quote_levels: expected an integer, got str 'many'",
                "bad env": "API_PORT (api.port)",
                "bad url": "bad port"}[case]
    assert code == 2, app.output()
    assert expected in app.output()
    assert_no_secret(app.output(), [*secret_values.values(), "pw-canary-url-1234"])


@pytest.fixture
def container_cleanup(docker_engine: DockerEngine):
    """Names of containers and networks to remove after the test, whatever happened."""
    created = {"containers": [], "networks": []}
    yield created
    for name in created["containers"]:
        docker_engine.docker("rm", "-f", name, check=False, timeout=60)
    for name in created["networks"]:
        docker_engine.docker("network", "rm", name, check=False, timeout=60)


def test_image_serves_the_rendered_config(docker_engine: DockerEngine, container_cleanup,
                                          tmp_path):
    tag = secrets.token_hex(4)
    network, redis_name, app_name = (f"flashmm-standin-test-{tag}",
                                     f"flashmm-standin-test-{tag}-redis",
                                     f"flashmm-standin-test-{tag}-app")
    password = secrets.token_urlsafe(18)
    secret_values = {**canaries(), "REDIS_PASSWORD": password}
    config_dir = tmp_path / "config"
    write_config(config_dir, FILE_LAYER)
    env = app_env(secret_values, api_port=8000,
                  redis_url=f"redis://:{password}@{redis_name}:6379/0", API_HOST="0.0.0.0")
    env_file = tmp_path / "app.env"          # docker's --env-file: KEY=value, taken literally
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    port = free_port()

    container_cleanup["networks"].append(network)
    docker_engine.docker("network", "create", network)
    container_cleanup["containers"] += [redis_name, app_name]
    docker_engine.docker("run", "-d", "--name", redis_name, "--network", network,
                         docker_engine.redis_image, "redis-server", "--requirepass", password,
                         "--save", "", "--appendonly", "no")
    docker_engine.docker("run", "-d", "--name", app_name, "--network", network,
                         "-p", f"127.0.0.1:{port}:8000", "--env-file", env_file,
                         "-v", f"{config_dir}:/app/config:ro", docker_engine.standin_image)

    healthy, elapsed = wait_for(lambda: http_get(port, "/health")[0] == 200, 30, step=0.2)
    logs = docker_engine.docker("logs", app_name, check=False)
    output = logs.stdout + logs.stderr
    assert healthy, f"/health not 200 after {elapsed:.1f} s:\n{output}"
    status, config = http_get(port, "/config")
    assert status == 200 and config["environment"] == ENVIRONMENT
    values = config["values"]
    assert values["trading.max_position_usdc"] == {"value": 150.0, "layer": "file"}
    assert values["app.name"] == {"value": "FromFile", "layer": "file"}
    assert values["trading.max_quote_levels"] == {"value": 4, "layer": "env"}
    assert f"environment file /app/config/environments/{ENVIRONMENT}.yml: " in output
    bodies = [json.dumps(http_get(port, path)[1]) for path in ("/health", "/config", "/stats",
                                                               "/secure")]
    docker_engine.docker("stop", "-t", "5", app_name, timeout=30)
    state = docker_engine.docker("inspect", "--format", "{{.State.ExitCode}}", app_name).stdout
    assert state.strip() == "0"
    logs = docker_engine.docker("logs", app_name, check=False)
    assert_no_secret(logs.stdout + logs.stderr + "\n".join(bodies), secret_values.values())
