"""flashmm_deploy.hostside.seed_apply and the seed script against a real redis-server: the three-way
semantics, check mode, the version and message contract, failures before any write, and one
EVAL per apply (the script is rendered by seed_script; its pure tests are in tests/unit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from flashmm_deploy.config import effective
from flashmm_deploy.inventory import host_validation
from flashmm_deploy.redis.client import Connection, Endpoint, ReplyError
from flashmm_deploy.hostside.seed_apply import SeedError, apply
from flashmm_deploy.hostside.seed_script import SEEDED_KEY as SEEDED
from flashmm_deploy.hostside.seed_script import SUMMARY_CHANNEL as SUMMARY
from flashmm_deploy.hostside.seed_script import UPDATES_CHANNEL as CHANNEL
from flashmm_deploy.hostside.seed_script import VERSION_KEY as VERSION
from flashmm_deploy.hostside.seed_script import lua_string, render_script, script_sha
from ports import free_port
from support import ALERT, CONF, HZ, POS, SEED_DESIRED, start_redis, stop_redis

pytestmark = pytest.mark.integration
D1 = SEED_DESIRED


def with_(base: dict, **changes) -> dict:
    out = dict(base)
    for short, value in changes.items():
        out[{"pos": POS, "hz": HZ, "conf": CONF, "alert": ALERT}[short]] = value
    return out


def dotted(key: str) -> str:
    return key.removeprefix("flashmm:config:").replace(":", ".")


@pytest.fixture
def seed(redis_server, redis_db):
    """seed(desired, **kw) -> result, against this test's fresh database."""

    def run(desired, **kw):
        endpoint = Endpoint(host=redis_server.host, port=redis_server.port, db=redis_db)
        return apply(endpoint, render_script(desired), **kw)

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
    """A subscriber to both channels, subscribed before the run it observes.  ``collect()``
    publishes a sentinel on each and returns what came before it (Redis delivers a channel's
    messages in order): (dotted keys on flashmm:config:updates, JSON summaries on
    flashmm:meta:updates).  Bounded waits."""

    SENTINEL = "test-sentinel"

    def __init__(self, server):
        self.client = server.client()
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(CHANNEL, SUMMARY)
        self._until(lambda seen: sum(m["type"] == "subscribe" for m in seen) == 2)

    def _until(self, done) -> list:
        seen, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = self.pubsub.get_message(timeout=0.5)
            if msg is not None:
                seen.append(msg)
                if done(seen):
                    return seen
        raise AssertionError(f"no end of messages within 10 s; got {seen}")

    def collect(self) -> tuple[list[str], list[dict]]:
        for channel in (CHANNEL, SUMMARY):
            self.client.publish(channel, self.SENTINEL)
        seen = self._until(lambda s: sum(m.get("data") == self.SENTINEL for m in s) == 2)
        msgs = [m for m in seen if m["type"] == "message" and m["data"] != self.SENTINEL]
        return ([m["data"] for m in msgs if m["channel"] == CHANNEL],
                [json.loads(m["data"]) for m in msgs if m["channel"] == SUMMARY])

    def close(self):
        self.pubsub.close()
        self.client.close()


NOTHING = ([], [])


@pytest.fixture
def updates(redis_server):
    u = Updates(redis_server)
    yield u
    u.close()


DEFAULT_PW = "s3cret-Pw!"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A redis-server that wants a password, with two ACL users: ``seeder`` (every FlashMM
    key) and ``narrow`` (trading keys only).  Tests use distinct databases on it."""
    server = start_redis(
        tmp_path_factory.mktemp("redis-auth"), "--requirepass", DEFAULT_PW,
        "--user", "seeder", "on", ">seeder-pw", "~flashmm:*", "&flashmm:*", "+@all",
        "--user", "narrow", "on", ">narrow-pw", "~flashmm:config:trading:*",
        "~flashmm:meta:*", "&*", "+@all")
    yield server
    stop_redis(server)


def auth_apply(server, db, desired, **kw):
    return apply(Endpoint(host=server.host, port=server.port, db=db, **kw),
                 render_script(desired))


def test_unreachable_redis_is_a_clear_error():
    port = free_port()                                     # claimed: nothing listens
    with pytest.raises(SeedError) as err:
        apply(Endpoint(port=port, db=4, password="hunter2-unreach"), render_script(D1))
    assert err.value.kind == "connect"
    assert f"127.0.0.1:{port}/4" in str(err.value) and "hunter2" not in str(err.value)


def test_auth_with_requirepass(auth_server):
    server = auth_server
    result = auth_apply(server, 2, D1, password=DEFAULT_PW)
    assert result["changed"] and result["version"] == 1
    assert server.client(2, password=DEFAULT_PW).mget(list(D1)) == list(D1.values())

    with pytest.raises(SeedError) as wrong:
        auth_apply(server, 2, D1, password="not-the-Pw-42")
    assert wrong.value.kind == "auth" and "WRONGPASS" in str(wrong.value)
    assert f"127.0.0.1:{server.port}/2" in str(wrong.value)
    assert "not-the-Pw-42" not in str(wrong.value) and "s3cret" not in str(wrong.value)

    with pytest.raises(SeedError) as missing:
        auth_apply(server, 2, D1)
    assert missing.value.kind == "auth" and "NOAUTH" in str(missing.value)
    assert server.client(2, password=DEFAULT_PW).get(VERSION) == "1"    # nothing more ran


def test_auth_as_acl_user(auth_server):
    server = auth_server
    result = auth_apply(server, 3, D1, username="seeder", password="seeder-pw")
    assert result["changed_keys"] == sorted(D1)
    admin = server.client(3, password=DEFAULT_PW)
    assert admin.hgetall(SEEDED) == D1

    with pytest.raises(SeedError) as err:
        auth_apply(server, 3, D1, username="seeder", password=DEFAULT_PW)
    assert err.value.kind == "auth" and "seeder" in str(err.value)
    assert DEFAULT_PW not in str(err.value)

    # A user that may not read every key: the script fails in its read phase, before any
    # write, so a partial seed is impossible.
    before = dump(admin)
    with pytest.raises(SeedError) as denied:
        auth_apply(server, 3, with_(D1, pos="1.0"), username="narrow", password="narrow-pw")
    assert "narrow-pw" not in str(denied.value)
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
    keys, summaries = updates.collect()
    assert keys == sorted(dotted(k) for k in D1) and len(summaries) == 1
    before = dump(r)
    result = seed(D1)
    assert result == {**result, "changed": False, "would_change": False, "changed_keys": [],
                      "drift": {}, "version": 1}
    assert dump(r) == before
    assert updates.collect() == NOTHING


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
    assert r.get(VERSION) == "1" and updates.collect() == NOTHING

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
    assert updates.collect() == (sorted(dotted(k) for k in (HZ, CONF)),
                                 [{"version": 2, "changed": sorted([HZ, CONF]), "source": "deploy"}])
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
    assert updates.collect() == NOTHING                    # no config key changed
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
    assert updates.collect() == ([dotted(ALERT)],
                                 [{"version": 2, "changed": [ALERT], "source": "deploy"}])
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
    assert r.get(VERSION) == "1" and updates.collect() == NOTHING


# ---- version and PUBLISH ---------------------------------------------------------------------

def test_version_and_one_message_per_changing_run(seed, r, updates):
    d2 = with_(D1, pos="100.0", hz="1.0", conf="0.5")
    runs = [D1, D1, d2, d2, with_(d2, pos="150.0")]
    got = []
    for desired in runs:
        result = seed(desired)
        got.append((result["version"], updates.collect()))
    def message(version, keys):
        return (version, (sorted(dotted(k) for k in keys),
                          [{"version": version, "changed": sorted(keys), "source": "deploy"}]))

    assert got == [message(1, D1), (1, NOTHING), message(2, [POS, HZ, CONF]), (2, NOTHING),
                   message(3, [POS])]
    assert r.get(VERSION) == "3"


def test_version_continues_from_an_existing_counter(seed, r):
    r.set(VERSION, "41")
    assert seed(D1)["version"] == 42 and r.get(VERSION) == "42"


def test_messages_carry_key_names_never_values(seed, updates):
    seed(with_(D1, pos="1234.5"))
    keys, summaries = updates.collect()
    assert keys == sorted(dotted(k) for k in D1)        # what the seed's listener reloads
    assert "1234.5" not in json.dumps([keys, summaries])


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
    assert updates.collect() == NOTHING
    assert check["check"] is True and check["changed"] is False and check["would_change"] is True
    assert check["version"] == 1                                        # nothing written
    applied = seed(target)
    assert applied["changed"] is True and applied["version"] == 2
    for field in ("changed_keys", "drift", "recorded", "forgotten", "before", "after"):
        assert check[field] == applied[field], field
    assert check["changed_keys"] == sorted([POS, ALERT, "flashmm:config:old:kept"])
    assert check["drift"] == {CONF: {"runtime": "0.9", "inventory": "0.7"}}
    assert len(updates.collect()[1]) == 1


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
    lambda r: r.set(VERSION, "-1"),
    lambda r: r.set(VERSION, "9223372036854775807"),     # the next INCR would overflow
    lambda r: r.set(VERSION, "99999999999999999999"),
    lambda r: r.hset(VERSION, "x", "1"),
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


def test_the_largest_version_the_counter_can_take_is_reached_then_refused(seed, r):
    r.set(VERSION, "9223372036854775806")
    assert seed(D1)["version"] == 9223372036854775807         # exact: never through a double
    before = dump(r)
    with pytest.raises(SeedError, match="increment"):
        seed(with_(D1, pos="3.0"))
    assert dump(r) == before


def test_bad_arguments_are_refused():
    with pytest.raises(SeedError, match="mode") as err:
        apply(Endpoint(port=1), render_script(D1), mode="force")
    assert err.value.kind == "input"


def test_script_refuses_bad_mode_and_action(redis_server, redis_db):
    with Connection(Endpoint(host=redis_server.host, port=redis_server.port, db=redis_db)) as conn:
        for argv in (("force", "apply"), ("keep", "maybe")):
            reply = conn.pipeline(("EVAL", render_script(D1), 0, *argv))[0]
            assert isinstance(reply, ReplyError) and "flashmm seed" in str(reply)
        assert conn.call("DBSIZE") == 0


# ---- rendering -------------------------------------------------------------------------------

NASTY = {
    POS: '{"q": "it\'s \\"quoted\\" \\\\ back\\\\slash ]] ]=] [[x]] --[[ c", "n": [1,\n2,\r\n\t3]}',
    HZ: json.dumps("é 漢字 🚀 \u2028 \x00 \x7f {{ x }} {% y %} {# z #}", ensure_ascii=False),
    CONF: '"\\u0000\\n"',
    ALERT: "  true\n",
}


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
    with Connection(Endpoint(host=redis_server.host, port=redis_server.port)) as conn:
        assert conn.call("EVAL", f"return {literal}", 0) == text.encode("utf-8")


def test_runtime_keys_of_a_real_inventory_seed_and_read_back(seed, r):
    inv = host_validation.load_inventory(Path(__file__).resolve().parents[2] / "inventories" / "development")
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
        with Connection(Endpoint(host=server.host, port=server.port)) as conn:
            conn.call("ECHO", "monitor-sentinel")
        seen = []
        for _ in range(10000):
            cmd = mon.next_command()
            if cmd["command"] == "ECHO monitor-sentinel":
                # drop what the sentinel's own connection sent before it
                return [c for c in seen if c["client_port"] != cmd["client_port"]]
            seen.append(cmd)
    raise AssertionError("sentinel never seen")


def test_one_apply_is_one_script_execution(tmp_path):
    server = start_redis(tmp_path)
    try:
        script = render_script(D1)
        sha = script_sha(script)

        def run():
            apply(Endpoint(host=server.host, port=server.port, db=5), script)

        cold = monitored(server, run)                  # not cached yet: EVALSHA, then EVAL
        client_cmds = [c["command"].split(" ", 1)[0] for c in cold if c["client_type"] != "lua"]
        assert client_cmds == ["SELECT", "EVALSHA", "EVAL"]
        lua_cmds = [c["command"].split(" ", 1)[0] for c in cold if c["client_type"] == "lua"]
        assert lua_cmds.count("SET") == 4 and lua_cmds.count("INCR") == 1
        assert lua_cmds.count("PUBLISH") == 5          # one per changed key, one summary
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
    endpoint = Endpoint(host=server.host, port=server.port, db=4, password=DEFAULT_PW)
    apply(endpoint, script)
    admin = server.client(password=DEFAULT_PW)
    admin.config_resetstat()
    apply(endpoint, script)
    stats = admin.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    # the no-change run reads inside the script (HGETALL, GETs) and writes nothing
    assert calls.pop("auth") == 1 and calls.pop("select") == 1 and calls.pop("evalsha") == 1
    assert calls.pop("info", 0) <= 1 and calls.pop("config|resetstat", 0) <= 1
    assert set(calls) <= {"get", "hgetall"}, calls


# ---- shipped to hosts: stdlib only -----------------------------------------------------------

def test_shipped_module_utils_run_with_the_standard_library_alone(tmp_path, redis_server,
                                                                  redis_db, r):
    """The module_utils files the seed modules import, laid out as AnsiballZ ships them
    (ansible/module_utils/), in an interpreter without site-packages: no redis-py, no
    package, no ansible but that skeleton."""
    root = Path(__file__).resolve().parents[2] / "module_utils"
    pkg = tmp_path / "ansible" / "module_utils"
    pkg.mkdir(parents=True)
    for init in (tmp_path / "ansible" / "__init__.py", pkg / "__init__.py"):
        init.write_text("")
    for name in ("flashmm_redis_client.py", "flashmm_redis_endpoint.py", "flashmm_redis_resp.py",
                 "flashmm_redis_tls.py", "flashmm_redis_keys.py", "flashmm_seed_script.py",
                 "flashmm_seed_apply.py", "flashmm_audit_log.py"):
        link = root / name
        assert link.is_symlink() and not Path(os.readlink(link)).is_absolute()
        (pkg / name).write_text(link.read_text())
    code = (
        "import importlib.util, json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "assert importlib.util.find_spec('redis') is None\n"
        "assert importlib.util.find_spec('flashmm_deploy') is None\n"
        "from ansible.module_utils.flashmm_seed_apply import apply, Endpoint\n"
        "from ansible.module_utils.flashmm_seed_script import render_script\n"
        "script = render_script(json.loads(sys.argv[2]))\n"
        "print(json.dumps(apply(Endpoint(port=int(sys.argv[3]), db=int(sys.argv[4])), script)))\n")
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(tmp_path), json.dumps(D1),
         str(redis_server.port), str(redis_db)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changed_keys"] == sorted(D1)
    assert r.hgetall(SEEDED) == D1


# ---- an operator's override is kept only when valid for its key -----------------------------

RULES = {HZ: {"kind": "number", "gt": 0, "le": 10}, CONF: {"kind": "number", "ge": 0, "le": 1},
         ALERT: {"kind": "boolean"}}


@pytest.mark.parametrize("key,value,why", [
    (HZ, "1000", "must be at most 10"),
    (HZ, "0", "must be greater than 0"),
    (HZ, "abc", "not JSON"),
    (HZ, '"5"', "not a finite number"),
    (CONF, "-0.5", "must be at least 0"),
    (ALERT, "1", "not true or false"),
])
def test_an_invalid_runtime_override_fails_the_seed_and_changes_nothing(redis_server, redis_db,
                                                                        r, key, value, why):
    endpoint = Endpoint(host=redis_server.host, port=redis_server.port, db=redis_db)
    apply(endpoint, render_script(D1, RULES))
    r.set(key, value)                                       # an operator, at runtime
    before = dump(r)
    with pytest.raises(SeedError) as err:
        apply(endpoint, render_script(with_(D1, pos="3.0"), RULES))
    assert why in str(err.value) and key in str(err.value) and "enforce" in str(err.value)
    assert dump(r) == before
    enforced = apply(endpoint, render_script(D1, RULES), mode="enforce")
    assert key in enforced["enforced"] and r.get(key) == D1[key]


def test_a_valid_runtime_override_is_kept(redis_server, redis_db, r):
    endpoint = Endpoint(host=redis_server.host, port=redis_server.port, db=redis_db)
    apply(endpoint, render_script(D1, RULES))
    r.set(HZ, "10")                                         # the bound itself is valid
    assert apply(endpoint, render_script(D1, RULES))["drift"] == {
        HZ: {"runtime": "10", "inventory": "5.0"}}


def test_check_lists_keys_under_the_prefix_that_the_schema_does_not_have(seed, r):
    seed(D1)
    typo = "flashmm:config:trading:max_positon_usdc"
    r.set(typo, "100")                                     # an operator's typo
    r.set("flashmm:meta:other", "x")                       # not under the config prefix
    for n in range(150):                                   # more than the report shows
        r.set(f"flashmm:config:zz:stray{n:03d}", "1")
    result = seed(D1, check=True)
    assert result["changed"] is False and result["drift"] == {}
    assert result["unknown"][0] == typo and len(result["unknown"]) == 100
    assert not set(D1) & set(result["unknown"])
    assert seed(D1)["unknown"] == []                       # apply does not scan
