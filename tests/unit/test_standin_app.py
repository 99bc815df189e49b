"""The stand-in app over a fake Redis connection and a fake clock: runtime layer, update
messages, health, the workload counters, and the API bodies exactly as the server builds them
(no secret in any of them).  Pure: no process, no socket."""

from __future__ import annotations

import fnmatch
import io
import json

import pytest
import yaml
from cryptography.fernet import Fernet

from flashmm_deploy.redis.client import RedisError, ReplyError
from flashmm_deploy.standin.app import StandIn
from flashmm_config.layers import REQUIRED_ENV, load_fields
from flashmm_deploy.standin.event_log import EventLog
from flashmm_deploy.standin.http_api import ROUTES, build, respond

FIELDS = load_fields()
NEW_KEY, OLD_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()


class FakeRedis:
    """Just enough of ``redis_client.Connection``: SCAN (paged, to exercise the cursor), GET,
    pipeline, close.  ``down`` makes every call fail like a dropped connection.  Values: str
    (a Redis string) or anything else (another type: WRONGTYPE)."""

    def __init__(self, store=None, page=2):
        self.store = {} if store is None else store
        self.page = page
        self.down = False
        self.closed = False
        self.commands = []

    def call(self, *args):
        reply = self.pipeline(args)[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(self, *commands):
        if self.down:
            raise RedisError("connection to redis at fake:6379/0 failed: reset", "connect")
        return [self._one(*command) for command in commands]

    def _one(self, name, *args):
        self.commands.append(name)
        if name == "GET":
            value = self.store.get(args[0])
            if value is None or isinstance(value, str):
                return None if value is None else value.encode()
            return ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")
        if name == "SCAN":
            cursor, pattern = int(args[0]), args[2]
            keys = sorted(k for k in self.store if fnmatch.fnmatchcase(k, pattern))
            end = cursor + self.page
            return [b"0" if end >= len(keys) else str(end).encode(),
                    [k.encode() for k in keys[cursor:end]]]
        raise AssertionError(f"unexpected command {name}")

    def close(self):
        self.closed = True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Harness:
    """A prepared StandIn whose every connection is ``self.redis``."""

    def __init__(self, tmp_path, environ=None, file=None, store=None):
        config_dir = tmp_path / "config"
        (config_dir / "environments").mkdir(parents=True, exist_ok=True)
        if file is not None:
            (config_dir / "environments" / "testnet.yml").write_text(yaml.safe_dump(file))
        self.redis = FakeRedis(store)
        self.clock = Clock()
        self.stream = io.StringIO()
        self.connects = 0
        env = {"ENVIRONMENT": "testnet", **{name: "" for name in REQUIRED_ENV},
               "REDIS_URL": "redis://127.0.0.1:6379/0", **(environ or {})}
        self.app = StandIn(env, EventLog(self.stream), config_dir, connect=self._connect,
                           clock=self.clock)
        self.problems = self.app.prepare()

    def _connect(self, endpoint):
        if self.redis.down:
            raise RedisError("cannot connect to redis at fake: refused", "connect")
        self.connects += 1
        self.redis.closed = False
        return self.redis

    @property
    def log(self):
        return self.stream.getvalue()

    def get(self, path):
        status, payload = respond(self.app, path)
        return status, json.loads(payload)


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    assert h.problems == []
    return h


def test_prepare_refuses_missing_required_variables(tmp_path):
    h = Harness(tmp_path)
    del h.app.environ["SEI_WS_URL"]
    assert h.app.prepare() == ["missing required environment variable(s) (they may be "
                               "empty): SEI_WS_URL"]


def test_prepare_refuses_a_bad_redis_url_without_showing_its_password(tmp_path):
    h = Harness(tmp_path, {"REDIS_URL": "redis://:pw-canary-123@127.0.0.1:notaport/0"})
    assert len(h.problems) == 1
    assert "bad port" in h.problems[0] and "pw-canary-123" not in h.problems[0]


def test_redis_url_default_and_file_fallback(tmp_path):
    assert Harness(tmp_path / "a", {"REDIS_URL": ""}).app.redis_url == "redis://localhost:6379/0"
    h = Harness(tmp_path / "b", {"REDIS_URL": ""},
                file={"storage": {"redis": {"url": "redis://cache:6380/2"}}})
    assert h.app.link.endpoint.port == 6380 and h.app.link.endpoint.db == 2


def test_health_follows_the_workload(harness):
    link = harness.app.link
    status, body = harness.get("/health")
    assert status == 503 and body["reason"] == "redis not connected yet"
    harness.redis.store["flashmm:meta:version"] = "7"
    assert link.connect_once()
    status, body = harness.get("/health")
    assert status == 200 and body["status"] == "ok" and body["config_version"] == 7
    harness.clock.now += 1.5                       # no successful operation for 1.5 s
    status, body = harness.get("/health")
    assert status == 503 and "1.5s ago" in body["reason"]
    link.tick()
    assert harness.get("/health")[0] == 200
    harness.redis.down = True
    link.tick()
    status, body = harness.get("/health")
    assert status == 503 and body["reason"].startswith("redis unavailable: connection to")
    assert harness.redis.closed
    assert not link.connect_once()                 # still down: one more attempt, logged once
    assert harness.log.count("redis unavailable") == 1
    harness.redis.down = False
    assert link.connect_once()
    assert harness.get("/health")[0] == 200
    status, stats = harness.get("/stats")
    assert (stats["redis_ops"], stats["redis_failures"], stats["reconnects"]) == (3, 1, 1)
    assert "redis reconnected" in harness.log


def test_runtime_scan_keeps_only_valid_runtime_keys(harness):
    harness.redis.store.update({
        "flashmm:config:ml:confidence_threshold": "0.75",
        "flashmm:config:monitoring:alert_enabled": "false",
        "flashmm:config:trading:quote_frequency_hz": "3",
        "flashmm:config:trading:max_position_usdc": '"lots"',     # wrong kind
        "flashmm:config:api:port": "1",                           # not a runtime key
        "flashmm:config:nope:thing": "1",                         # not a key at all
        "flashmm:config:trading:max": {"a": "hash"},              # not a key, another type
        "flashmm:meta:version": "3",
    })
    assert harness.app.link.connect_once()
    assert harness.app.state.runtime() == {"ml.confidence_threshold": 0.75,
                                           "monitoring.alert_enabled": False,
                                           "trading.quote_frequency_hz": 3.0}
    assert "KEYS" not in harness.redis.commands and "SCAN" in harness.redis.commands
    log = harness.log
    assert ("ignoring runtime value of trading.max_position_usdc ('\"lots\"'): expected a "
            "number, got str") in log
    assert "ignoring flashmm:config:api:port: not a runtime config key" in log
    assert "ignoring flashmm:config:nope:thing: not a runtime config key" in log
    assert "runtime value (scan): ml.confidence_threshold = 0.75" in log
    harness.app.rescan()
    assert harness.log.count("ignoring flashmm:config:api:port") == 1      # logged once
    values = harness.get("/config")[1]["values"]
    assert values["ml.confidence_threshold"] == {"value": 0.75, "layer": "runtime"}
    assert values["trading.max_position_usdc"] == {"value": 2000.0, "layer": "default"}


def test_rescan_drops_keys_that_are_gone(harness):
    harness.redis.store["flashmm:config:ml:confidence_threshold"] = "0.75"
    harness.app.link.connect_once()
    del harness.redis.store["flashmm:config:ml:confidence_threshold"]
    harness.app.rescan()
    assert harness.app.state.runtime() == {}
    assert "runtime value (scan): ml.confidence_threshold removed" in harness.log


def test_config_update_messages(harness):
    harness.app.link.connect_once()
    store = harness.redis.store
    store["flashmm:config:trading:quote_frequency_hz"] = "2.5"
    harness.app.on_message("flashmm:config:updates", b"trading.quote_frequency_hz")
    assert "config update: trading.quote_frequency_hz = 2.5" in harness.log
    values = harness.get("/config")[1]["values"]
    assert values["trading.quote_frequency_hz"] == {"value": 2.5, "layer": "runtime"}

    store["flashmm:config:trading:quote_frequency_hz"] = "[1]"
    harness.app.on_message("flashmm:config:updates", b"trading.quote_frequency_hz")
    assert "ignoring runtime value of trading.quote_frequency_hz" in harness.log
    assert harness.app.state.effective()["trading.quote_frequency_hz"] == (5.0, "default")

    store["flashmm:config:trading:quote_frequency_hz"] = "4"
    harness.app.on_message("flashmm:config:updates", b"trading.quote_frequency_hz")
    del store["flashmm:config:trading:quote_frequency_hz"]
    harness.app.on_message("flashmm:config:updates", b"trading.quote_frequency_hz")
    assert "config update: trading.quote_frequency_hz removed" in harness.log
    assert harness.app.state.runtime() == {}

    harness.app.on_message("flashmm:config:updates", b"api.port")
    harness.app.on_message("flashmm:config:updates", b"no.such.key")
    assert "config update ignored: 'api.port' is not a runtime config key" in harness.log
    assert "config update ignored: 'no.such.key' is not a config key" in harness.log
    assert harness.get("/stats")[1]["updates_received"] == 6


def test_config_update_while_redis_is_down_waits_for_the_rescan(harness):
    harness.app.link.connect_once()
    harness.redis.down = True
    harness.app.on_message("flashmm:config:updates", b"ml.confidence_threshold")
    assert "not applied now" in harness.log
    harness.redis.down = False
    harness.redis.store["flashmm:config:ml:confidence_threshold"] = "0.9"
    assert harness.app.link.connect_once()
    assert harness.app.state.runtime() == {"ml.confidence_threshold": 0.9}


def test_meta_updates_are_logged(harness):
    harness.app.on_message("flashmm:meta:updates", b'{"version": 4, "changed": ["a.b"]}')
    harness.app.on_message("flashmm:meta:updates", b"not json")
    assert 'meta update: {"changed":["a.b"],"version":4}' in harness.log
    assert "meta update ignored: not JSON" in harness.log


def test_config_body_has_every_non_secret_key_typed(tmp_path):
    h = Harness(tmp_path, {"API_CORS_ORIGINS": '["https://a.example"]', "API_PORT": "8080"},
                file={"trading": {"max_position_usdc": 150}})
    h.redis.store["flashmm:meta:version"] = "12"
    h.app.link.connect_once()
    status, body = h.get("/config")
    assert status == 200 and set(body) == {"environment", "config_version", "values"}
    assert body["environment"] == "testnet" and body["config_version"] == 12
    assert set(body["values"]) == {k for k, f in FIELDS.items() if not f.secret}
    values = body["values"]
    assert values["api.port"] == {"value": 8080, "layer": "env"}
    assert values["api.cors_origins"] == {"value": ["https://a.example"], "layer": "env"}
    assert values["trading.max_position_usdc"] == {"value": 150.0, "layer": "file"}
    assert values["app.debug"] == {"value": False, "layer": "default"}
    assert values["storage.influxdb.url"] == {"value": None, "layer": "default"}


def test_stats_and_not_found_bodies(harness):
    status, body = harness.get("/stats")
    assert status == 200
    assert set(body) == {"redis_ops", "redis_failures", "reconnects", "updates_received",
                         "started_at"}
    assert body["started_at"].endswith("Z")
    assert harness.get("/nope") == (404, {"error": "not found"})
    assert harness.get("/config/") == (404, {"error": "not found"})


def _secure_store():
    new, old, other = Fernet(NEW_KEY), Fernet(OLD_KEY), Fernet(Fernet.generate_key())
    return {
        "flashmm:secure:a": new.encrypt(b"alpha").decode(),
        "flashmm:secure:b": new.encrypt(b"beta").decode(),
        "flashmm:secure:c": old.encrypt(b"gamma").decode(),
        "flashmm:secure:d": other.encrypt(b"delta").decode(),
        "flashmm:secure:e": "not a token",
        "flashmm:secure:f": {"hash": "value"},
        "flashmm:config:ml:confidence_threshold": "0.5",          # not a record
    }


@pytest.mark.parametrize("environ,expected", [
    ({"ENCRYPTION_KEY": NEW_KEY, "OLD_ENCRYPTION_KEY": OLD_KEY},
     {"records": 6, "readable": 3, "unreadable": 3, "readable_with_old_key_only": 1,
      "key_problem": None}),
    ({"ENCRYPTION_KEY": NEW_KEY, "OLD_ENCRYPTION_KEY": ""},
     {"records": 6, "readable": 2, "unreadable": 4, "readable_with_old_key_only": 0,
      "key_problem": None}),
    ({"ENCRYPTION_KEY": OLD_KEY},
     {"records": 6, "readable": 1, "unreadable": 5, "readable_with_old_key_only": 0,
      "key_problem": None}),
    ({"ENCRYPTION_KEY": "", "OLD_ENCRYPTION_KEY": OLD_KEY},
     {"records": 6, "readable": 0, "unreadable": 6, "readable_with_old_key_only": 0,
      "key_problem": "ENCRYPTION_KEY is not set"}),
])
def test_secure_counts_with_old_and_new_keys(tmp_path, environ, expected):
    h = Harness(tmp_path, environ, store=_secure_store())
    h.app.link.connect_once()
    assert h.get("/secure") == (200, expected)


def test_secure_is_503_while_redis_is_down(harness):
    status, body = harness.get("/secure")
    assert status == 503 and body["error"].startswith("redis unavailable")


CANARIES = {f.env: f"canary-{f.env.lower()}-7Hq2" for f in FIELDS.values()
            if f.secret and f.env not in ("ENCRYPTION_KEY", "OLD_ENCRYPTION_KEY")}


def test_no_secret_in_any_body_or_log_line(tmp_path):
    redis_password = "canary-redis-url-pw-9Xk"
    environ = {**CANARIES, "ENCRYPTION_KEY": NEW_KEY, "OLD_ENCRYPTION_KEY": OLD_KEY,
               "REDIS_URL": f"redis://:{redis_password}@127.0.0.1:6379/0",
               "INFLUXDB_URL": "http://admin:canary-influx-url-pw-3Jd@influxdb:8086",
               "CAMBRIAN_API_KEY": CANARIES["CAMBRIAN_API_KEY"]}
    h = Harness(tmp_path, environ, store=_secure_store())
    assert h.problems == []
    secrets = [*CANARIES.values(), NEW_KEY, OLD_KEY, redis_password, "canary-influx-url-pw-3Jd"]
    assert all(value in h.app.environ.values() or value in environ["REDIS_URL"]
               or value in environ["INFLUXDB_URL"] for value in secrets)
    bodies = []
    for phase in ("before connect", "connected", "down"):
        if phase == "connected":
            h.app.link.connect_once()
            h.app.on_message("flashmm:config:updates", b"ml.confidence_threshold")
        if phase == "down":
            h.redis.down = True
            h.app.link.tick()
        for path in [*ROUTES, "/nope"]:
            bodies.append(json.dumps(build(h.app, path)))     # as built, before any scrub
            bodies.append(respond(h.app, path)[1].decode())   # as served
    assert len(bodies) == 30
    text = "\n".join(bodies) + h.log
    for value in secrets:
        assert value not in text
    config = json.loads(respond(h.app, "/config")[1])["values"]
    assert config["storage.redis.url"]["value"] == "redis://:***@127.0.0.1:6379/0"
    assert config["storage.influxdb.url"]["value"] == "http://admin:***@influxdb:8086"
    assert not any(key.startswith("secrets.") for key in config)


def test_served_bodies_scrub_a_secret_that_slipped_into_a_value(tmp_path):
    """Defence in depth: an operator who pasted a secret into a non-secret key."""
    h = Harness(tmp_path, {"API_AUTH_TOKEN": "canary-token-Rw81", "FLASHMM_APP_NAME":
                           "app canary-token-Rw81"})
    assert "canary-token-Rw81" in json.dumps(build(h.app, "/config"))
    assert "canary-token-Rw81" not in respond(h.app, "/config")[1].decode()


def test_log_lines_are_single_flushed_events_with_secrets_masked():
    class Stream(io.StringIO):
        flushes = 0

        def flush(self):
            Stream.flushes += 1

    stream = Stream()
    log = EventLog(stream)
    log.add_secrets(["canary-log-secret-51", "short", None, ""])
    log("two\nlines with canary-log-secret-51 and short")
    log.once("tag", "first")
    log.once("tag", "second")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and Stream.flushes == 2
    assert lines[0].endswith("INFO two\\nlines with *** and short")
    assert lines[1].endswith("WARNING first")


def test_a_wrongtype_version_key_counts_as_a_failure_but_keeps_the_link(harness):
    harness.redis.store["flashmm:meta:version"] = {"not": "a string"}
    harness.app.link.connect_once()
    assert harness.app.link.failures == 1 and harness.app.link.connected
    assert "workload GET flashmm:meta:version failed: WRONGTYPE" in harness.log
