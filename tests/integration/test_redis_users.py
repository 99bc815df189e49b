"""The Redis users of a password-protected stack, on a real redis-server started from the ACL
file deploy renders: the app's user may do what the app does and nothing that changes the
server or leaves ``flashmm:*``; deploy's user seeds, backs up and reloads the ACL but cannot
stop, flush or reconfigure the server; ``default`` is off.  The live reload replaces users in
place (no client dropped), upgrades a stack that had only an all-powerful ``default`` and rolls
both users' passwords."""

from __future__ import annotations

import secrets
import socket

import pytest
import redis

from flashmm_deploy.hostside import backup_host, seed_apply
from flashmm_deploy.render import render
from flashmm_deploy.hostside.redis_acl import (APP_USER, DEPLOY_USER, ensure_loaded, reload_args,
                                      users)
from flashmm_deploy.redis.client import Connection, Endpoint
from support import start_redis, stop_redis

pytestmark = pytest.mark.integration

PUBLIC = {"trading": {"max_position_usdc": 2000.0, "quote_frequency_hz": 5.0},
          "ml": {"confidence_threshold": 0.7}, "monitoring": {"alert_enabled": True}}


def pw() -> str:
    return secrets.token_urlsafe(24)


class Raw:
    """One plain connection (RESP by hand): tells a dropped connection from an error reply."""

    def __init__(self, server, *auth: str):
        self.sock = socket.create_connection((server.host, server.port), timeout=5)
        self.reader = self.sock.makefile("rb")
        if auth:
            assert self("AUTH", *auth) == b"+OK"

    def __call__(self, *args: str) -> bytes:
        parts = [a.encode() for a in args]
        self.sock.sendall(b"*%d\r\n" % len(parts)
                          + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        line = self.reader.readline().rstrip(b"\r\n")
        if line[:1] == b"$" and line != b"$-1":
            line = self.reader.readline().rstrip(b"\r\n")
        return line

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stack_redis(tmp_path):
    """A redis-server reading redis/users.acl, as the stack's does; the file's passwords."""
    acl = tmp_path / "redis" / "users.acl"
    acl.parent.mkdir()
    app, deploy = pw(), pw()
    acl.write_text(render.acl_file([app], [deploy]))
    # DEBUG and MODULE enabled: the ACL, not the server's configuration, must refuse them
    server = start_redis(tmp_path / "data", "--aclfile", str(acl), "--enable-debug-command",
                         "yes", "--enable-module-command", "yes")
    yield server, acl, app, deploy
    stop_redis(server)


def client(server, user, password) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, username=user, password=password,
                       socket_timeout=5, protocol=2)


def endpoint_args(server, user=DEPLOY_USER) -> dict:
    return dict(host=server.host, port=server.port, db=0, username=user, tls=False,
                ca_file=None, cert_file=None, key_file=None, verify=True, timeout=5.0)


def noperm(c: redis.Redis, *command) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.execute_command(*command)


def test_the_app_user_may_do_what_the_app_does_and_nothing_else(stack_redis):
    server, _, app, _ = stack_redis
    c = client(server, APP_USER, app)
    # what the app does
    assert c.set("flashmm:config:trading:quote_frequency_hz", "2.5")
    assert c.get("flashmm:config:trading:quote_frequency_hz") == b"2.5"
    assert c.hset("flashmm:meta:h", "a", "1") == 1 and c.hgetall("flashmm:meta:h") == {b"a": b"1"}
    assert list(c.scan_iter("flashmm:config:*"))
    with c.pipeline(transaction=True) as p:          # MULTI/EXEC
        p.incr("flashmm:meta:version").get("flashmm:meta:version")
        assert p.execute() == [1, b"1"]
    assert c.eval("return redis.call('GET', KEYS[1])", 1, "flashmm:meta:version") == b"1"
    sub = c.pubsub()
    sub.subscribe("flashmm:config:updates")
    assert sub.get_message(timeout=2)["type"] == "subscribe"
    assert c.publish("flashmm:config:updates", "trading.quote_frequency_hz") == 1
    assert sub.get_message(timeout=2)["data"] == b"trading.quote_frequency_hz"
    # and nothing else
    for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"),
                    ("CONFIG", "SET", "maxmemory", "1"), ("ACL", "LIST"),
                    ("ACL", "SETUSER", APP_USER, "+@all"), ("SHUTDOWN", "NOSAVE"),
                    ("KEYS", "*"), ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST"),
                    ("FUNCTION", "FLUSH"), ("SCRIPT", "FLUSH"), ("CLIENT", "KILL", "ID", "1"),
                    ("SAVE",), ("GET", "other:key"), ("SET", "other:key", "x"),
                    ("PUBLISH", "other:channel", "x")):
        noperm(c, *command)
    with pytest.raises(redis.ResponseError, match="can't access"):   # nor from a script
        c.eval("return redis.call('SET', 'other:key', 'x')", 0)
    for command in (("SUBSCRIBE", "other:channel"), ("PSUBSCRIBE", "*")):
        assert Raw(server, APP_USER, app)(*command).startswith(b"-NOPERM"), command
    assert client(server, APP_USER, app).ping()       # the server still runs


def test_default_is_off_and_the_health_user_only_pings(stack_redis):
    server, _, app, deploy = stack_redis
    for password in (app, deploy, "anything-at-all"):
        with pytest.raises(redis.AuthenticationError):
            client(server, "default", password).ping()
    raw = Raw(server)
    assert raw("GET", "flashmm:meta:version").startswith(b"-NOAUTH")
    health = client(server, render.HEALTH_USER, "x")
    assert health.ping()
    noperm(health, "GET", "flashmm:meta:version")


def test_what_the_seed_wrote_survives_a_restart_of_redis(tmp_path):
    """Redis 7.0 replays a script's writes from the append-only file as MULTI/EXEC checked
    against the default user's rules: a default user without rights would lose them."""
    acl = tmp_path / "users.acl"
    deploy = pw()
    acl.write_text(render.acl_file([pw()], [deploy]))
    data = tmp_path / "data"
    ep = None
    for start in (1, 2):
        server = start_redis(data, "--aclfile", str(acl), "--appendonly", "yes",
                             port=ep.port if ep else None)
        ep = Endpoint(host=server.host, port=server.port, username=DEPLOY_USER,
                      password=deploy)
        try:
            result = seed_apply.apply(ep, render.seed_lua(PUBLIC), mode="keep")
            assert result["changed"] is (start == 1), result     # the restart kept them
        finally:
            stop_redis(server)


def test_the_deploy_user_seeds_backs_up_and_cannot_stop_or_flush(stack_redis):
    server, _, _, deploy = stack_redis
    ep = Endpoint(host=server.host, port=server.port, username=DEPLOY_USER, password=deploy)
    assert seed_apply.apply(ep, render.seed_lua(PUBLIC), mode="keep")["changed"]
    dumped = backup_host.dump_redis(ep)
    assert any("flashmm:config:trading:quote_frequency_hz" in str(e) for e in dumped)
    c = client(server, DEPLOY_USER, deploy)
    assert c.get("flashmm:config:trading:quote_frequency_hz") == b"5.0"
    for command in (("SHUTDOWN", "NOSAVE"), ("FLUSHALL",), ("FLUSHDB",),
                    ("CONFIG", "SET", "maxmemory", "1"), ("DEBUG", "SLEEP", "0"),
                    ("MODULE", "LIST"), ("KEYS", "*"), ("GET", "other:key")):
        noperm(c, *command)


def test_a_stack_of_the_old_single_user_upgrades_live_without_dropping_a_client(tmp_path):
    acl = tmp_path / "redis" / "users.acl"
    acl.parent.mkdir()
    app, deploy = pw(), pw()
    # what deploy wrote before the app and deploy users existed
    acl.write_text(f"user default on #{render.sha256(app)} ~* &* +@all\n"
                   f"user {render.HEALTH_USER} on nopass -@all +ping\n")
    server = start_redis(tmp_path / "data", "--aclfile", str(acl))
    try:
        old_app = Raw(server, app)                    # the app, connected as default
        assert old_app("SET", "flashmm:config:x", "1") == b"+OK"
        acl.write_text(render.acl_file([app], [deploy]))
        args = reload_args(endpoint_args(server), {"REDIS_DEPLOY_PASSWORD": deploy,
                                                    "REDIS_PASSWORD": app})
        tries = ([args["password"], args["previous_password"]], args["legacy_passwords"])
        # the write step: the new users, the old default kept (the app restarts after it)
        assert ensure_loaded(endpoint_args(server), tries[0], acl.read_text(),
                             legacy_passwords=tries[1], keep_legacy_default=True) == \
            {"running": True, "reloaded": True, "default_kept": True}
        assert old_app("GET", "flashmm:config:x") == b"1"
        new_app = Raw(server, APP_USER, app)          # the app restarted with its user
        # the seed step: default off
        assert ensure_loaded(endpoint_args(server), tries[0], acl.read_text(),
                             legacy_passwords=tries[1])["reloaded"]
        assert new_app("GET", "flashmm:config:x") == b"1"     # not dropped
        with pytest.raises(redis.AuthenticationError):       # nobody logs in as default
            client(server, "default", app).ping()
        assert Raw(server)("GET", "flashmm:config:x").startswith(b"-NOAUTH")
        # a rerun changes nothing; the live users are the file's
        assert ensure_loaded(endpoint_args(server), tries[0], acl.read_text(),
                             legacy_passwords=tries[1])["reloaded"] is False
        live = client(server, DEPLOY_USER, deploy).execute_command("ACL", "LIST")
        assert {u: r[0] for u, r in users("\n".join(x.decode() for x in live)).items()} == \
            {u: r[0] for u, r in users(acl.read_text()).items()}
    finally:
        stop_redis(server)


def test_both_users_roll_their_passwords_live_and_the_old_ones_end(stack_redis):
    server, acl, app, deploy = stack_redis
    app2, deploy2 = pw(), pw()
    app_conn = Raw(server, APP_USER, app)
    deploy_conn = Raw(server, DEPLOY_USER, deploy)
    acl.write_text(render.acl_file([app2, app], [deploy2, deploy]))     # the switch: both
    assert ensure_loaded(endpoint_args(server), [deploy2, deploy], acl.read_text())["reloaded"]
    for user, password in ((APP_USER, app), (APP_USER, app2), (DEPLOY_USER, deploy),
                           (DEPLOY_USER, deploy2)):
        assert client(server, user, password).ping()
    acl.write_text(render.acl_file([app2], [deploy2]))                   # the end: new only
    assert ensure_loaded(endpoint_args(server), [deploy2, deploy], acl.read_text())["reloaded"]
    for user, password in ((APP_USER, app), (DEPLOY_USER, deploy)):
        with pytest.raises(redis.AuthenticationError):
            client(server, user, password).ping()
    assert app_conn("PING") == b"+PONG" and deploy_conn("PING") == b"+PONG"   # never dropped
    # a user the file does not name is removed (its clients with it)
    client(server, DEPLOY_USER, deploy2).execute_command(
        "ACL", "SETUSER", "intruder", "on", ">x", "+@all", "~*")
    assert ensure_loaded(endpoint_args(server), [deploy2], acl.read_text())["reloaded"]
    with pytest.raises(redis.AuthenticationError):
        client(server, "intruder", "x").ping()


def test_the_connection_as_the_app_user_is_what_flashmm_config_uses(stack_redis):
    from flashmm_config import layers, runtime_keys

    server, _, app, _ = stack_redis
    fields = layers.load_fields()
    field = fields["trading.quote_frequency_hz"]
    with Connection(Endpoint(host=server.host, port=server.port, username=APP_USER,
                             password=app)) as conn:
        seen = runtime_keys.read_version(conn)
        assert runtime_keys.write(conn, field, 2.5, actor="test", seen=seen)[0] == "changed"
        assert runtime_keys.read_runtime(conn, fields, None)["trading.quote_frequency_hz"] == 2.5



def test_a_runtime_set_on_a_stack_whose_acl_predates_the_audit_list_still_applies(stack_redis):
    """Until its next deploy, a stack's ACL file lets the app run neither TIME nor LPUSH: the
    set stands (value, version, message), only its audit entry is missing."""
    from flashmm_config import layers, runtime_keys

    server, _, app, deploy = stack_redis
    admin = client(server, DEPLOY_USER, deploy)
    admin.execute_command("ACL", "SETUSER", APP_USER, "-time", "-lpush", "-ltrim")
    field = layers.load_fields()["trading.quote_frequency_hz"]
    with Connection(Endpoint(host=server.host, port=server.port, username=APP_USER,
                             password=app)) as conn:
        seen = runtime_keys.read_version(conn)
        outcome, version = runtime_keys.write(conn, field, 3.5, actor="test", seen=seen)
    assert outcome == "changed" and version == (seen or 0) + 1
    assert admin.get("flashmm:config:trading:quote_frequency_hz") == b"3.5"
    assert admin.exists("flashmm:audit:runtime") == 0
