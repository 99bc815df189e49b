"""The client library FlashMM imports (``flashmm_config``) against a real redis-server seeded
as deploy seeds it: the seed's own usage for every schema key, validated runtime sets written
and published as deploy does, hot reload between two clients (with the figure printed),
catch-up by the version key, the file reload, and Redis stopped and started under a running
client."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import yaml

from flashmm_config.log import LogBase
from flashmm_config import (AsyncConfigManager, ConfigManager, RedisUnavailable,
                            RuntimeSetRefused)
from flashmm_config_support import deployed_host
from flashmm_deploy.config import effective
from flashmm_deploy.redis.client import RedisError
from flashmm_deploy.config.schema import FIELDS
from ports import free_port
from support import start_redis, valid_secrets

pytestmark = pytest.mark.integration

HZ, POS = "trading.quote_frequency_hz", "trading.max_position_usdc"
ALERT, CONF = "monitoring.alert_enabled", "ml.confidence_threshold"
DEV = {"app": {"environment": "development", "debug": True, "log_level": "DEBUG"},
       "trading": {"max_position_usdc": 100.0, "quote_frequency_hz": 1.0}}
PRODUCTION = {"app": {"environment": "production", "debug": False, "log_level": "WARNING"},
              "security": {"encryption_required": True, "audit_logging": True,
                           "ip_whitelist_enabled": True},
              "storage": {"redis": {"password_required": True},
                          "influxdb": {"auth_required": True}},
              "monitoring": {"alert_enabled": False}}


class ListLog(LogBase):
    """The library's log interface, kept in memory: (level, message) pairs."""

    def __init__(self):
        super().__init__()
        self.lines: list[tuple[str, str]] = []

    def __call__(self, message, level="INFO"):
        self.lines.append((level, message))

    def count(self, text):
        return sum(text in message for _, message in self.lines)

    @property
    def text(self):
        return "\n".join(f"{level} {message}" for level, message in self.lines)


def wait_for(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def url_of(server, db):
    return f"redis://{server.host}:{server.port}/{db}"


def flat(cfg) -> dict:
    tree = effective.effective(cfg, redact=False)
    out = {}
    for path in FIELDS:
        node = tree
        for part in path.split("."):
            node = node[part]
        out[path] = node
    return out


def snapshot(client: redis.Redis) -> dict:
    return {key: client.dump(key) for key in sorted(client.scan_iter("*"))}


def test_the_seeds_usage_works_for_every_schema_key(tmp_path, redis_server, redis_db):
    """``config = ConfigManager(); await config.initialize(); config.get(...)`` for all 62 keys
    (env names as the schema declares them), ``await config.set_runtime_config(...)``, and the
    seed's own pub/sub listener calling ``await config_manager.reload_key(key)``."""
    url = url_of(redis_server, redis_db)
    environ, config_dir, cfg = deployed_host(tmp_path, DEV, valid_secrets(), redis_url=url)
    expected = {**flat(cfg), "storage.redis.url": url}
    client = redis_server.client(redis_db)
    assert client.get("flashmm:config:trading:quote_frequency_hz") == "1.0"    # deploy seeded

    async def seed_app():
        config = AsyncConfigManager(environ, config_dir, log=ListLog())
        await config.initialize()
        listener_side = AsyncConfigManager(environ, config_dir, log=ListLog())
        listener_side.sync.load()                      # its only update path: the listener
        listener_side.sync.link.connect_once()
        try:
            for key, want in expected.items():
                assert config.get(key) == want, key
                assert config.get(key, "fallback") == ("fallback" if want is None else want)
            assert config.get("trading")["max_position_usdc"] == 100.0
            assert config.explain(HZ)["layer"] == "runtime"
            assert config.explain("secrets.secret_key")["value"] == "<redacted>"

            # the seed's listener, as written there (redis.asyncio pub/sub)
            redis_client = aioredis.Redis.from_url(url)
            pubsub = redis_client.pubsub()
            await pubsub.subscribe("flashmm:config:updates")
            reloaded = []

            async def setup_config_listener():
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        config_key = message["data"].decode()
                        await listener_side.reload_key(config_key)
                        reloaded.append(config_key)
                        return

            listening = asyncio.create_task(setup_config_listener())
            await asyncio.sleep(0)
            result = await config.set_runtime_config(POS, 1500, actor="seed-usage test")
            assert result["changed"] and config.get(POS) == 1500.0
            await asyncio.wait_for(listening, 5)
            assert reloaded == [POS] and listener_side.get(POS) == 1500.0
            assert listener_side.explain(POS)["layer"] == "runtime"
            await pubsub.aclose()
            await redis_client.aclose()
        finally:
            await config.close()
            listener_side.sync.close()

    asyncio.run(seed_app())
    assert json.loads(client.get("flashmm:config:trading:max_position_usdc")) == 1500.0


def test_two_clients_apply_a_set_and_catch_up_by_version(tmp_path, redis_server, redis_db):
    url = url_of(redis_server, redis_db)
    environ, config_dir, _ = deployed_host(tmp_path, DEV, valid_secrets(), redis_url=url)
    a = ConfigManager(environ, config_dir, log=ListLog()).initialize()
    b_log = ListLog()
    b = ConfigManager(environ, config_dir, log=b_log).initialize()
    applied: dict = {}
    event = threading.Event()

    def on_change(key, value, layer):
        applied[key] = (value, layer, time.perf_counter())
        event.set()

    b.on_change(on_change)
    wait_for(lambda: b.subscriber.subscriptions >= 1, what="b subscribed")
    latencies = []
    try:
        for i in range(30):
            value = 1.0 + (i % 9)
            if b.get(HZ) == value:
                continue
            event.clear()
            start = time.perf_counter()
            a.set_runtime_config(HZ, value, actor="two-clients test")
            returned = time.perf_counter()
            assert event.wait(5), f"b never applied {value}"
            assert b.get(HZ) == value and applied[HZ][:2] == (value, "runtime")
            latencies.append(((applied[HZ][2] - start) * 1000, (applied[HZ][2] - returned) * 1000))
        # the publish happens inside the set call: between its start and its return
        for name, values in (("set call start", [s for s, _ in latencies]),
                             ("set call return", [r for _, r in latencies])):
            print(f"\nb applied a's set, ms after the {name}: median "
                  f"{statistics.median(values):.2f}, max {max(values):.2f}, n={len(values)}")

        # catch-up: c reads the runtime layer, misses two changes, then subscribes
        c_log = ListLog()
        c = ConfigManager(environ, config_dir, log=c_log)
        c.load()
        assert c.link.connect_once() and c.get(CONF) == 0.6
        a.set_runtime_config(CONF, 0.9, actor="while c is away")
        a.set_runtime_config(ALERT, False, actor="while c is away")
        assert c.get(CONF) == 0.6                       # nothing delivered it yet
        c.start()
        wait_for(lambda: c.get(CONF) == 0.9 and c.get(ALERT) is False, what="c caught up")
        assert c_log.count("runtime layer catching up: version") == 1
        c.close()
    finally:
        a.close()
        b.close()


def test_an_unset_falls_back_and_every_refused_set_changes_nothing(tmp_path, redis_server,
                                                                   redis_db):
    url = url_of(redis_server, redis_db)
    secrets = {k: v for k, v in valid_secrets().items() if k != "alert_webhook_url"}
    environ, config_dir, _ = deployed_host(tmp_path, PRODUCTION, secrets, redis_url=url)
    client = redis_server.client(redis_db)
    config = ConfigManager(environ, config_dir, log=ListLog()).initialize()
    pubsub = client.pubsub()
    pubsub.subscribe("flashmm:config:updates", "flashmm:meta:updates")
    while pubsub.get_message(timeout=1.0) is not None:       # the two subscribe replies
        pass
    try:
        before = snapshot(client)
        refusals = {
            (ALERT, True): "monitoring.alert_enabled: refused, monitoring.alert_enabled = true "
                           "breaks a rule: secrets.alert_webhook_url: is required but not set; "
                           "needed because monitoring.alert_enabled is true in testnet or "
                           "production",
            (HZ, 50): "trading.quote_frequency_hz: refused, trading.quote_frequency_hz = 50.0 "
                      "breaks a rule: Input should be less than or equal to 10",
            (HZ, "fast"): "trading.quote_frequency_hz: expected a number, got str",
            ("api.port", 9000): "api.port: not a runtime key",
            ("trading.nope", 1): "trading.nope: unknown key",
        }
        for (key, value), message in refusals.items():
            with pytest.raises(RuntimeSetRefused) as caught:
                config.set_runtime_config(key, value)
            assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
        assert snapshot(client) == before
        assert pubsub.get_message(timeout=0.3) is None           # nothing published
        assert config.get(ALERT) is False and config.get(HZ) == 5.0

        result = config.set_runtime_config(HZ, 2.5, actor="ops@example")
        assert result == {"key": HZ, "value": 2.5, "changed": True, "version": 2}
        messages = [pubsub.get_message(timeout=5) for _ in range(2)]
        assert [(m["channel"], m["data"]) for m in messages] == [
            ("flashmm:config:updates", HZ),
            ("flashmm:meta:updates", '{"version":2,"changed":["flashmm:config:trading:'
                                     'quote_frequency_hz"],"source":"runtime","actor":"ops@example"}')]
        assert client.get("flashmm:config:trading:quote_frequency_hz") == "2.5"
        assert config.set_runtime_config(HZ, 2.5)["changed"] is False    # no bump, no message
        assert client.get("flashmm:meta:version") == "2"
        assert config.unset_runtime_config(HZ)["version"] == 3
        assert client.get("flashmm:config:trading:quote_frequency_hz") is None
        # .env holds no runtime key: the config file's value is next
        assert config.explain(HZ)["layer"] == "file" and config.get(HZ) == 5.0
    finally:
        pubsub.close()
        config.close()


def test_the_mounted_file_is_reloaded_and_a_bad_one_keeps_the_last_good(tmp_path):
    """Development's file-based reload, by the library's own poller (no Redis needed)."""
    environ, config_dir, _ = deployed_host(tmp_path, DEV, valid_secrets())
    environ["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"            # nobody there
    environ.pop("TRADING_RISK_MULTIPLIER")              # file layer only (runtime keys are)
    log = ListLog()
    config = ConfigManager(environ, config_dir, log=log, file_poll=0.05).initialize()
    changes = []
    config.on_change(lambda key, value, layer: changes.append((key, value, layer)))
    path = config_dir / "environments" / "development.yml"
    try:
        data = yaml.safe_load(path.read_text())
        data["trading"]["risk_multiplier"] = 2.5
        path.write_text(yaml.safe_dump(data))
        wait_for(lambda: config.get("trading.risk_multiplier") == 2.5, what="file reload")
        assert ("trading.risk_multiplier", 2.5, "file") in changes
        path.write_text("trading: {risk_multiplier: [unclosed\n")
        wait_for(lambda: log.count("config file rejected, keeping the last good") == 1,
                 what="rejection logged")
        assert "not valid YAML at line" in log.text
        data["trading"]["max_position_usdc"] = "lots"
        path.write_text(yaml.safe_dump(data))
        wait_for(lambda: log.count("expected a number, got str") == 1, what="type error logged")
        assert config.get("trading.risk_multiplier") == 2.5
        assert config.get(POS) == 100.0
        assert log.count("starting without the runtime layer") == 1
    finally:
        config.close()


class OwnRedis:
    """A redis-server this test stops and starts on one port (append-only file: a restart
    keeps the keys, as a deployed Redis does)."""

    def __init__(self, tmp: Path):
        self.port, self.dir, self.process = free_port(), tmp, None
        tmp.mkdir(parents=True, exist_ok=True)

    def start(self):
        self.process = start_redis(self.dir, "--appendonly", "yes", port=self.port).process

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


def answers(manager) -> bool:
    try:
        return manager.link.use(lambda conn: conn.call("PING")) == "PONG"
    except (RedisUnavailable, RedisError):
        return False


def test_redis_down_at_start_during_an_outage_and_back(tmp_path, capfd):
    server = OwnRedis(tmp_path / "redis")
    url = f"redis://127.0.0.1:{server.port}/0"
    environ, config_dir, _ = deployed_host(tmp_path, DEV, valid_secrets())
    environ["REDIS_URL"] = url
    log = ListLog()
    config = ConfigManager(environ, config_dir, log=log, check_interval=0.1).initialize()
    try:
        assert config.get(HZ) == 1.0 and config.explain(HZ)["layer"] == "file"
        time.sleep(0.5)                               # several reconnect attempts
        assert log.count("redis unavailable") == 1
        assert log.count("starting without the runtime layer (defaults, file and environment "
                         "serve)") == 1
        with pytest.raises(RedisUnavailable):
            config.set_runtime_config(HZ, 2.0)

        server.start()
        operator = ConfigManager(environ, config_dir, log=ListLog(), check_interval=0.1).initialize()
        operator.set_runtime_config(HZ, 2.0, actor="operator")
        wait_for(lambda: config.get(HZ) == 2.0, what="the client to connect and apply")
        assert "redis connected" in log.text

        server.stop()
        wait_for(lambda: log.count("redis unavailable") == 2, what="the outage noticed")
        time.sleep(0.5)
        assert log.count("redis unavailable") == 2                # once per outage
        assert "serving the last known configuration" in log.lines[-1][1] or \
            log.count("serving the last known configuration") == 1
        assert config.get(HZ) == 2.0 and config.explain(HZ)["layer"] == "runtime"
        with pytest.raises(RedisUnavailable):
            config.set_runtime_config(HZ, 3.0)

        server.start()
        wait_for(lambda: config.subscriber.subscriptions >= 2, what="resubscribed")
        wait_for(lambda: answers(operator), what="the operator's client back")  # backoff <= 1 s
        operator.set_runtime_config(HZ, 3.0, actor="operator")
        wait_for(lambda: config.get(HZ) == 3.0, what="an update after the outage")
        assert config.set_runtime_config(HZ, 4.0)["changed"]
        assert "redis reconnected" in log.text
        operator.close()
    finally:
        config.close()
        if server.process and server.process.poll() is None:
            server.stop()
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "Traceback" not in log.text
    assert not [m for level, m in log.lines if level == "ERROR"]
