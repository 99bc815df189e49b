"""flashmm_deploy.redis_seed against a real redis-server: the RESP client, the three-way seed
semantics, check mode, the version/PUBLISH contract, rendering and atomicity (one EVAL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from flashmm_deploy import host_validation, effective
from flashmm_deploy.redis_seed import SEEDED_KEY as SEEDED
from flashmm_deploy.redis_seed import UPDATES_CHANNEL as CHANNEL
from flashmm_deploy.redis_seed import VERSION_KEY as VERSION
from flashmm_deploy.redis_seed import (
    SEED_LUA_BODY,
    RedisReplyError,
    RespConnection,
    SeedError,
    apply,
    lua_string,
    render_script,
    script_sha,
)
from support import ALERT, CONF, HZ, POS, SEED_DESIRED, start_redis, stop_redis

D1 = SEED_DESIRED


def with_(base: dict, **changes) -> dict:
    out = dict(base)
    for short, value in changes.items():
        out[{"pos": POS, "hz": HZ, "conf": CONF, "alert": ALERT}[short]] = value
    return out


@pytest.fixture
def seed(redis_server, redis_db):
    """seed(desired, **kw) -> result, against this test's fresh database."""

    def run(desired, *, secret=(), **kw):
        script = render_script(desired, secret)
        return apply(redis_server.host, redis_server.port, redis_db, script, **kw)

    return run


@pytest.fixture
def r(redis_server, redis_db) -> redis.Redis:
    return redis_server.client(redis_db)


def dump(client: redis.Redis) -> dict:
    """Every key of the database with its type, value and TTL (SCAN, never KEYS)."""
    out = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        value = {"string": client.get, "hash": client.hgetall,
                 "list": lambda k: client.lrange(k, 0, -1), "set": client.smembers,
                 "zset": lambda k: client.zrange(k, 0, -1, withscores=True)}[kind](key)
        out[key] = (kind, value, client.ttl(key))
    return out


class Updates:
    """A subscriber to flashmm:config:updates, subscribed before the run it observes.
    ``collect()`` publishes a sentinel and returns every message received before it (Redis
    delivers a channel's messages in order), with a bounded wait."""

    SENTINEL = "test-sentinel"

    def __init__(self, server):
        self.client = server.client()
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(CHANNEL)
        self._wait(lambda m: m["type"] == "subscribe")

    def _wait(self, stop) -> list:
        seen, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = self.pubsub.get_message(timeout=0.5)
            if msg is None:
                continue
            if stop(msg):
                return seen
            seen.append(msg)
        raise AssertionError(f"no end of messages within 10 s; got {seen}")

    def collect(self) -> list[dict]:
        self.client.publish(CHANNEL, self.SENTINEL)
        msgs = self._wait(lambda m: m["type"] == "message" and m["data"] == self.SENTINEL)
        return [json.loads(m["data"]) for m in msgs if m["type"] == "message"]

    def close(self):
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def updates(redis_server):
    u = Updates(redis_server)
    yield u
    u.close()


# ---- the RESP client -------------------------------------------------------------------------

def test_resp_client_parses_every_reply_type(redis_server, redis_db):
    with RespConnection(redis_server.host, redis_server.port, 5) as conn:
        assert conn.call("SELECT", redis_db) == "OK"                        # +simple
        assert conn.call("PING") == "PONG"
        assert conn.call("SET", "k", "v\r\n\x00é") == "OK"
        assert conn.call("GET", "k") == "v\r\n\x00é".encode()              # $bulk, binary-safe
        assert conn.call("GET", "missing") is None                          # $-1
        assert conn.call("INCR", "n") == 1                                  # :integer
        assert conn.call("RPUSH", "l", "a", "", "c") == 3
        assert conn.call("LRANGE", "l", 0, -1) == [b"a", b"", b"c"]         # *array
        assert conn.call("EVAL", "return {1, 'x', {2, {}}, false}", 0) == [1, b"x", [2, []], None]
        assert conn.call("BLPOP", "nothing", "0.01") is None                # *-1
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):             # -error
            conn.call("GET", "l")
        replies = conn.pipeline(("GET", "l"), ("PING",),
                                ("EVAL", "return redis.error_reply('MYERR e1')", 0))
        assert isinstance(replies[0], RedisReplyError) and replies[1] == "PONG"
        assert isinstance(replies[2], RedisReplyError) and str(replies[2]) == "MYERR e1"
        conn.call("FLUSHDB")


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]                   # nothing listens there once closed


def test_unreachable_redis_is_a_clear_error():
    port = _closed_port()
    with pytest.raises(SeedError) as err:
        apply("127.0.0.1", port, 4, render_script(D1), password="hunter2-unreach")
    assert err.value.kind == "connect"
    assert f"cannot connect to redis at 127.0.0.1:{port}/4" in str(err.value)
    assert "hunter2" not in str(err.value)


DEFAULT_PW = "s3cret-Pw!"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A redis-server that wants a password, with two ACL users: ``seeder`` (every config key)
    and ``narrow`` (trading keys only).  Tests use distinct databases on it."""
    server = start_redis(
        tmp_path_factory.mktemp("redis-auth"), "--requirepass", DEFAULT_PW,
        "--user", "seeder", "on", ">seeder-pw", "~flashmm:config:*", "&flashmm:config:updates",
        "+@all",
        "--user", "narrow", "on", ">narrow-pw", "~flashmm:config:trading:*",
        "~flashmm:config:seeded", "~flashmm:config:version", "&*", "+@all")
    yield server
    stop_redis(server)


def test_auth_with_requirepass(auth_server):
    server = auth_server
    result = apply(server.host, server.port, 2, render_script(D1), password=DEFAULT_PW)
    assert result["changed"] and result["version"] == 1
    assert server.client(2, password=DEFAULT_PW).mget(list(D1)) == list(D1.values())

    with pytest.raises(SeedError) as wrong:
        apply(server.host, server.port, 2, render_script(D1), password="not-the-Pw-42")
    assert wrong.value.kind == "auth"
    assert f"127.0.0.1:{server.port}/2" in str(wrong.value)
    assert "not-the-Pw-42" not in str(wrong.value) and "s3cret" not in str(wrong.value)
    assert "WRONGPASS" in str(wrong.value)

    with pytest.raises(SeedError) as missing:
        apply(server.host, server.port, 2, render_script(D1))
    assert missing.value.kind == "auth" and "NOAUTH" in str(missing.value)
    assert server.client(2, password=DEFAULT_PW).get(VERSION) == "1"    # nothing more ran


def test_auth_as_acl_user(auth_server):
    server = auth_server
    result = apply(server.host, server.port, 3, render_script(D1), username="seeder",
                   password="seeder-pw")
    assert result["changed_keys"] == sorted(D1)
    admin = server.client(3, password=DEFAULT_PW)
    assert admin.hgetall(SEEDED) == D1

    with pytest.raises(SeedError) as err:
        apply(server.host, server.port, 3, render_script(D1), username="seeder",
              password=DEFAULT_PW)
    assert err.value.kind == "auth" and "'seeder'" in str(err.value)
    assert DEFAULT_PW not in str(err.value)

    # A user that may not read every key: the script fails in its read phase, before any
    # write, so a partial seed is impossible.
    before = dump(admin)
    with pytest.raises(SeedError) as denied:
        apply(server.host, server.port, 3, render_script(with_(D1, pos="1.0")),
              username="narrow", password="narrow-pw")
    assert "can't access" in str(denied.value) and "narrow-pw" not in str(denied.value)
    assert dump(admin) == before


# ---- three-way semantics ---------------------------------------------------------------------

def test_absent_keys_take_the_inventory_value(seed, r):
    result = seed(D1)
    assert result["changed"] is True
    assert result["changed_keys"] == sorted(D1)
    assert result["drift"] == {} and result["version"] == 1
    assert {k: r.get(k) for k in D1} == D1
    assert r.hgetall(SEEDED) == D1
    assert r.get(VERSION) == "1"


def test_second_run_with_same_input_writes_nothing(seed, r, updates):
    seed(D1)
    assert len(updates.collect()) == 1
    before = dump(r)
    result = seed(D1)
    assert result == {**result, "changed": False, "would_change": False, "changed_keys": [],
                      "drift": {}, "version": 1}
    assert dump(r) == before
    assert updates.collect() == []


def test_key_unchanged_since_seed_follows_the_inventory(seed, r):
    seed(D1)
    result = seed(with_(D1, hz="2.5"))
    assert result["changed_keys"] == [HZ] and result["drift"] == {}
    assert result["before"] == {HZ: "5.0"} and result["after"] == {HZ: "2.5"}
    assert r.get(HZ) == "2.5" and r.hget(SEEDED, HZ) == "2.5"
    assert r.get(VERSION) == "2"


def test_operator_override_is_kept_and_reported_until_resolved(seed, r, updates):
    seed(D1)
    updates.collect()
    r.set(HZ, "1.5")                                       # operator, at runtime
    result = seed(with_(D1, hz="2.5"))                     # inventory changed too
    assert result["drift"] == {HZ: {"runtime": "1.5", "inventory": "2.5"}}
    assert result["changed"] is False and result["changed_keys"] == []
    assert r.get(HZ) == "1.5"
    assert r.hget(SEEDED, HZ) == "5.0"                     # record untouched ...
    again = seed(with_(D1, hz="2.5"))                      # ... so it keeps being reported
    assert again["drift"] == result["drift"] and again["changed"] is False
    assert r.get(VERSION) == "1" and updates.collect() == []

    # Same inventory as last seeded: still an override, still kept.
    assert seed(D1)["drift"] == {HZ: {"runtime": "1.5", "inventory": "5.0"}}


def test_present_but_never_seeded_value_is_an_override(seed, r):
    r.set(POS, "500.0")                                    # set by hand before any deploy
    result = seed(D1)
    assert result["drift"] == {POS: {"runtime": "500.0", "inventory": "2000.0"}}
    assert result["changed_keys"] == sorted(set(D1) - {POS})
    assert r.get(POS) == "500.0" and r.hget(SEEDED, POS) is None


def test_enforce_overwrites_overrides(seed, r, updates):
    seed(D1)
    r.set(HZ, "1.5")
    r.set(CONF, "0.9")
    updates.collect()
    result = seed(with_(D1, hz="2.5"), mode="enforce")
    assert result["drift"] == {}
    assert result["enforced"] == {HZ: {"runtime": "1.5", "inventory": "2.5"},
                                  CONF: {"runtime": "0.9", "inventory": "0.7"}}
    assert result["changed_keys"] == sorted([HZ, CONF]) and result["version"] == 2
    assert r.get(HZ) == "2.5" and r.get(CONF) == "0.7"
    assert r.hget(SEEDED, HZ) == "2.5" and r.hget(SEEDED, CONF) == "0.7"
    assert updates.collect() == [{"version": 2, "changed": sorted([HZ, CONF]), "source": "deploy"}]
    assert seed(with_(D1, hz="2.5"))["changed"] is False


def test_override_equal_to_the_new_inventory_value_converges(seed, r, updates):
    seed(D1)
    r.set(HZ, "2.5")                                       # operator got there first
    updates.collect()
    result = seed(with_(D1, hz="2.5"))
    assert result["drift"] == {} and result["changed_keys"] == []
    assert result["recorded"] == [HZ]
    assert result["changed"] is True                       # the seeded record was written
    assert r.hget(SEEDED, HZ) == "2.5" and r.get(VERSION) == "1"
    assert updates.collect() == []                         # no config key changed
    assert seed(with_(D1, hz="2.5"))["changed"] is False


def test_never_seeded_value_equal_to_desired_is_just_recorded(seed, r):
    r.set(ALERT, "true")
    result = seed(D1)
    assert ALERT not in result["changed_keys"] and result["recorded"] == [ALERT]
    assert r.hget(SEEDED, ALERT) == "true"


def test_seeded_key_deleted_at_runtime_is_seeded_again(seed, r):
    seed(D1)
    r.delete(CONF)
    result = seed(D1)
    assert result["changed_keys"] == [CONF] and result["before"] == {CONF: None}
    assert r.get(CONF) == "0.7" and r.get(VERSION) == "2"


def test_no_longer_desired_key_unchanged_since_seed_is_deleted(seed, r, updates):
    seed(D1)
    updates.collect()
    smaller = {k: v for k, v in D1.items() if k != ALERT}
    result = seed(smaller)
    assert result["changed_keys"] == [ALERT] and result["after"] == {ALERT: None}
    assert r.exists(ALERT) == 0 and r.hgetall(SEEDED) == smaller
    assert updates.collect() == [{"version": 2, "changed": [ALERT], "source": "deploy"}]
    assert seed(smaller)["changed"] is False


@pytest.mark.parametrize("mode", ["keep", "enforce"])
def test_no_longer_desired_key_changed_at_runtime_is_kept_as_drift(seed, r, mode):
    seed(D1)
    r.set(ALERT, "false")
    smaller = {k: v for k, v in D1.items() if k != ALERT}
    result = seed(smaller, mode=mode)
    assert result["drift"] == {ALERT: {"runtime": "false", "inventory": None}}
    assert result["changed"] is False and result["changed_keys"] == []
    assert r.get(ALERT) == "false" and r.hget(SEEDED, ALERT) == "true"
    assert seed(smaller, mode=mode)["drift"] == result["drift"]


def test_no_longer_desired_key_already_gone_only_drops_its_record(seed, r, updates):
    seed(D1)
    r.delete(ALERT)
    updates.collect()
    smaller = {k: v for k, v in D1.items() if k != ALERT}
    result = seed(smaller)
    assert result["forgotten"] == [ALERT] and result["changed_keys"] == []
    assert result["changed"] is True and r.hgetall(SEEDED) == smaller
    assert r.get(VERSION) == "1" and updates.collect() == []


# ---- version and PUBLISH ---------------------------------------------------------------------

def test_version_and_one_message_per_changing_run(seed, r, updates):
    d2 = with_(D1, pos="100.0", hz="1.0", conf="0.5")
    runs = [D1, D1, d2, d2, with_(d2, pos="150.0")]
    got = []
    for desired in runs:
        result = seed(desired)
        got.append((result["version"], updates.collect()))
    assert got == [
        (1, [{"version": 1, "changed": sorted(D1), "source": "deploy"}]),
        (1, []),
        (2, [{"version": 2, "changed": sorted([POS, HZ, CONF]), "source": "deploy"}]),
        (2, []),
        (3, [{"version": 3, "changed": [POS], "source": "deploy"}]),
    ]
    assert r.get(VERSION) == "3"


def test_version_continues_from_an_existing_counter(seed, r):
    r.set(VERSION, "41")
    assert seed(D1)["version"] == 42 and r.get(VERSION) == "42"


def test_secret_values_never_reach_the_message_or_the_result(redis_server, redis_db, r, updates):
    secret_key = "flashmm:config:security:some_token"
    desired = {**D1, secret_key: json.dumps("tok-AAAA-1111")}
    script = render_script(desired, [secret_key])
    apply(redis_server.host, redis_server.port, redis_db, script)
    r.set(secret_key, json.dumps("tok-BBBB-2222"))                     # operator override
    kept = apply(redis_server.host, redis_server.port, redis_db, script)
    enforced = apply(redis_server.host, redis_server.port, redis_db, script, mode="enforce")
    assert kept["drift"] == {secret_key: {"runtime": "<redacted>", "inventory": "<redacted>"}}
    assert enforced["after"] == {secret_key: "<redacted>"}
    # given at apply time instead of render time (ARGV), a prune of the secret key
    pruned = apply(redis_server.host, redis_server.port, redis_db, render_script(D1),
                   secret_keys=[secret_key])
    assert pruned["changed_keys"] == [secret_key] and pruned["before"] == {secret_key: "<redacted>"}
    messages = updates.collect()
    assert [m["changed"] for m in messages] == [sorted(desired), [secret_key], [secret_key]]
    text = json.dumps([kept, enforced, pruned, messages])
    assert "tok-" not in text
    assert "2000.0" not in json.dumps(messages)                         # keys only, never values


# ---- check mode ------------------------------------------------------------------------------

def test_check_mode_writes_nothing_and_predicts_the_apply(seed, r, updates):
    seed(D1)
    r.set(CONF, "0.9")                                                  # override -> drift
    r.delete(ALERT)                                                     # re-seeded
    r.hset(SEEDED, "flashmm:config:old:gone", "1")                      # prune, key absent
    r.set("flashmm:config:old:kept", "2")
    r.hset(SEEDED, "flashmm:config:old:kept", "2")                      # prune, delete
    updates.collect()
    target = with_(D1, pos="300.0")
    before = dump(r)
    check = seed(target, check=True)
    assert dump(r) == before
    assert updates.collect() == []
    assert check["check"] is True and check["changed"] is False and check["would_change"] is True
    assert check["version"] == 1                                        # nothing written
    applied = seed(target)
    assert applied["changed"] is True and applied["version"] == 2
    for field in ("changed_keys", "drift", "recorded", "forgotten", "before", "after"):
        assert check[field] == applied[field], field
    assert check["changed_keys"] == sorted([POS, ALERT, "flashmm:config:old:kept"])
    assert check["drift"] == {CONF: {"runtime": "0.9", "inventory": "0.7"}}
    assert len(updates.collect()) == 1


def test_check_mode_on_an_empty_database(seed, r):
    check = seed(D1, check=True, mode="enforce")
    assert check["would_change"] is True and check["changed_keys"] == sorted(D1)
    assert check["version"] == 0 and dump(r) == {}


def test_check_mode_after_convergence_reports_nothing(seed, r):
    seed(D1)
    check = seed(D1, check=True)
    assert check["would_change"] is False and check["changed_keys"] == []


# ---- failures before any write ---------------------------------------------------------------

@pytest.mark.parametrize("setup", [
    lambda r: r.hset(HZ, "x", "1"),                      # a config key of the wrong type
    lambda r: r.set(SEEDED, "oops"),                     # the record is not a hash
    lambda r: r.set(VERSION, "not-a-number"),
    lambda r: (r.hset(SEEDED, "flashmm:config:old:k", "1"), r.rpush("flashmm:config:old:k", "x")),
])
def test_bad_state_fails_before_any_write(seed, r, setup):
    setup(r)
    r.set(POS, "1.0")
    before = dump(r)
    with pytest.raises(SeedError) as err:
        seed(D1, mode="enforce")
    assert err.value.kind == "script" and "flashmm seed" in str(err.value)
    assert dump(r) == before


def test_bad_arguments_are_refused():
    with pytest.raises(SeedError, match="mode"):
        apply("127.0.0.1", 1, 0, render_script(D1), mode="force")
    with pytest.raises(SeedError, match="username needs a password"):
        apply("127.0.0.1", 1, 0, render_script(D1), username="u")
    for bad in ({"other:key": "1"}, {VERSION: "1"}, {SEEDED: "1"}, {POS: "not json"},
                {POS: 1.0}):
        with pytest.raises(SeedError) as err:
            render_script(bad)
        assert err.value.kind == "input"


def test_script_refuses_bad_mode_and_action(redis_server, redis_db):
    with RespConnection(redis_server.host, redis_server.port) as conn:
        conn.call("SELECT", redis_db)
        for argv in (("force", "apply"), ("keep", "maybe")):
            reply = conn.pipeline(("EVAL", render_script(D1), 0, *argv))[0]
            assert isinstance(reply, RedisReplyError) and "flashmm seed" in str(reply)
        assert conn.call("DBSIZE") == 0


# ---- rendering -------------------------------------------------------------------------------

NASTY = {
    POS: '{"q": "it\'s \\"quoted\\" \\\\ back\\\\slash ]] ]=] [[x]] --[[ c", "n": [1,\n2,\r\n\t3]}',
    HZ: json.dumps("é 漢字 🚀 \u2028 \x00 \x7f {{ x }} {% y %} {# z #}", ensure_ascii=False),
    CONF: '"\\u0000\\n"',
    ALERT: "  true\n",
}


def test_rendering_is_deterministic():
    a = render_script(D1)
    b = render_script(dict(reversed(list(D1.items()))))
    assert a.encode() == b.encode()
    assert render_script(NASTY, [HZ]) == render_script(dict(NASTY), (HZ, HZ))
    assert render_script(with_(D1, hz="5.5")) != a
    assert a.endswith(SEED_LUA_BODY.lstrip("\n"))
    assert a.index(f'{{"{CONF}", "0.7"}}') < a.index(f'{{"{POS}", "2000.0"}}')   # sorted


def test_rendered_script_is_inert_to_jinja2():
    script = render_script(NASTY, [HZ])
    for marker in ("{{", "{%", "{#", "}}", "%}", "#}"):
        assert marker not in script


def test_nasty_values_round_trip_exactly(seed, redis_server, redis_db):
    result = seed(NASTY)
    assert result["changed_keys"] == sorted(NASTY)
    raw = redis.Redis(host=redis_server.host, port=redis_server.port, db=redis_db)
    for key, value in NASTY.items():
        assert raw.get(key) == value.encode("utf-8")
        assert raw.hget(SEEDED, key) == value.encode("utf-8")
    assert seed(NASTY)["changed"] is False
    raw.set(HZ, NASTY[HZ] + " ")
    assert seed(NASTY)["drift"][HZ] == {"runtime": NASTY[HZ] + " ", "inventory": NASTY[HZ]}


def test_lua_string_literal_round_trips_every_character(redis_server):
    text = "".join(chr(c) for c in range(0, 256)) + "]]\"'\\\n漢🚀\U0010ffff"
    literal = lua_string(text)
    assert literal.isascii() and "\n" not in literal and "\r" not in literal
    with RespConnection(redis_server.host, redis_server.port) as conn:
        assert conn.call("EVAL", f"return {literal}", 0) == text.encode("utf-8")


def test_runtime_keys_of_a_real_inventory_seed_and_read_back(seed, r):
    inv = host_validation.load_inventory(Path(__file__).resolve().parents[2] / "inventories" / "local")
    validated = host_validation.validate_host(inv, inv.hosts[0])
    assert validated.errors == []
    desired = effective.runtime_keys(effective.effective(validated.config))
    assert seed(desired)["changed_keys"] == sorted(desired)
    assert {k: json.loads(r.get(k)) for k in desired} == {
        k: json.loads(v) for k, v in desired.items()}
    assert seed(desired)["changed"] is False


# ---- atomicity: one EVAL per apply -----------------------------------------------------------

def monitored(server, action) -> list[dict]:
    """Run ``action`` under MONITOR and return the commands seen, up to a sentinel."""
    client = redis.Redis(host=server.host, port=server.port, decode_responses=True,
                         socket_timeout=10)
    with client.monitor() as mon:
        action()
        with RespConnection(server.host, server.port) as conn:     # sends nothing else
            conn.call("ECHO", "monitor-sentinel")
        seen = []
        for _ in range(10000):
            cmd = mon.next_command()
            if cmd["command"] == "ECHO monitor-sentinel":
                return seen
            seen.append(cmd)
    raise AssertionError("sentinel never seen")


def test_one_apply_is_one_script_execution(tmp_path):
    server = start_redis(tmp_path)
    try:
        script = render_script(D1)
        sha = script_sha(script)

        def run():
            apply(server.host, server.port, 5, script)

        cold = monitored(server, run)                  # not cached yet: EVALSHA, then EVAL
        client_cmds = [c["command"].split(" ", 1)[0] for c in cold if c["client_type"] != "lua"]
        assert client_cmds == ["SELECT", "EVALSHA", "EVAL"]
        lua_cmds = [c["command"].split(" ", 1)[0] for c in cold if c["client_type"] == "lua"]
        assert lua_cmds.count("SET") == 4 and lua_cmds.count("INCR") == 1
        assert lua_cmds.count("PUBLISH") == 1
        # every write happened inside the EVAL, after it in the log, nothing after the script
        eval_at = next(i for i, c in enumerate(cold) if c["command"].startswith("EVAL "))
        assert all(c["client_type"] == "lua" for c in cold[eval_at + 1:])
        assert cold[eval_at - 1]["command"] == f"EVALSHA {sha} 0 keep apply"

        server.client(5).delete(HZ)                    # make the next run change something
        warm = monitored(server, run)                  # cached: one EVALSHA only
        assert [c["command"].split(" ", 1)[0] for c in warm if c["client_type"] != "lua"] == [
            "SELECT", "EVALSHA"]
        warm_lua = [c["command"].split(" ", 1)[0] for c in warm if c["client_type"] == "lua"]
        assert warm_lua.count("SET") == 1

        # and INFO commandstats agrees: one EVALSHA call, no EVAL, per warm apply
        server.client(5).delete(HZ)
        admin = server.client()
        admin.config_resetstat()
        run()
        stats = admin.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1
        assert "cmdstat_eval" not in stats
        assert stats["cmdstat_select"]["calls"] == 1
    finally:
        stop_redis(server)


def test_authenticated_apply_sends_only_auth_select_and_the_script(auth_server):
    server = auth_server
    script = render_script(D1)
    apply(server.host, server.port, 4, script, password=DEFAULT_PW)
    admin = server.client(password=DEFAULT_PW)
    admin.config_resetstat()
    apply(server.host, server.port, 4, script, password=DEFAULT_PW)
    stats = admin.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    # the no-change run reads inside the script (HGETALL, GETs) and writes nothing
    assert calls.pop("auth") == 1 and calls.pop("select") == 1 and calls.pop("evalsha") == 1
    assert calls.pop("info", 0) <= 1 and calls.pop("config|resetstat", 0) <= 1
    assert set(calls) <= {"get", "hgetall"}, calls


# ---- shipped to hosts: stdlib only -----------------------------------------------------------

def test_module_runs_with_the_standard_library_alone(redis_server, redis_db, r):
    """Loaded by path in an interpreter without site-packages (no redis-py, no package), as
    the Ansible module ships it through module_utils."""
    path = Path(__file__).resolve().parents[2] / "module_utils" / "flashmm_redis_seed.py"
    assert path.is_symlink() and not Path(os.readlink(path)).is_absolute()
    code = (
        "import importlib.util, json, sys\n"
        "assert importlib.util.find_spec('redis') is None\n"
        "spec = importlib.util.spec_from_file_location('seedmod', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "script = m.render_script(json.loads(sys.argv[2]))\n"
        "print(json.dumps(m.apply('127.0.0.1', int(sys.argv[3]), int(sys.argv[4]), script)))\n")
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(path), json.dumps(D1),
         str(redis_server.port), str(redis_db)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changed_keys"] == sorted(D1)
    assert r.hgetall(SEEDED) == D1
