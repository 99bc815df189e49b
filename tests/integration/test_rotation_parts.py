"""The parts a rotation is made of, against a real redis-server: the live ACL reload (no
client dropped, both passwords during the switch, the old one refused after), the record
migration (batches, TTL kept, a record rewritten meanwhile left alone, a partial run resumed),
and the vault steps (begin/resume/finish, nothing renewed twice)."""

from __future__ import annotations

import secrets

import pytest
import redis
import yaml
from cryptography.fernet import Fernet

from flashmm_deploy.hostside import record_keys
from flashmm_deploy.secrets import rotation
from flashmm_deploy.hostside.redis_acl import APP_USER, DEPLOY_USER, AclError, ensure_loaded, file_rules
from flashmm_deploy.redis.client import Endpoint
from flashmm_deploy.render.render import acl_file
from flashmm_deploy.inventory.vault import VaultKeys
from support import copy_inventory, read_vault, start_redis, stop_redis, vault_keys

pytestmark = pytest.mark.integration


@pytest.fixture
def acl_redis(tmp_path):
    """A redis-server started from an ACL file (as the stack's is), password ``old``."""
    acl = tmp_path / "redis" / "users.acl"
    acl.parent.mkdir()
    old = secrets.token_urlsafe(16)
    acl.write_text(acl_file([old], [DEPLOY_PW]))
    server = start_redis(tmp_path / "data", "--aclfile", str(acl))
    yield server, acl, old
    stop_redis(server)


# deploy's user's password (the reload authenticates as that user; the app's user's rolls here)
DEPLOY_PW = secrets.token_urlsafe(16)


def args(server) -> dict:
    return dict(host=server.host, port=server.port, db=0, username=DEPLOY_USER, tls=False,
                ca_file=None, cert_file=None, key_file=None, verify=True, timeout=5.0)


def test_acl_reload_switches_passwords_live_without_dropping_a_client(acl_redis):
    server, acl, old = acl_redis
    new = secrets.token_urlsafe(16)

    def app(password):
        return redis.Redis(host=server.host, port=server.port, username=APP_USER,
                           password=password)
    client = app(old)
    client.set("flashmm:k", "v")
    assert ensure_loaded(args(server), [DEPLOY_PW], acl.read_text()) == \
        {"running": True, "reloaded": False, "default_kept": False}   # the file is what runs
    acl.write_text(acl_file([new, old], [DEPLOY_PW]))   # the switch: both
    assert ensure_loaded(args(server), [DEPLOY_PW], acl.read_text(), check=True)["reloaded"]
    assert ensure_loaded(args(server), [DEPLOY_PW], acl.read_text())["reloaded"]
    for password in (old, new):
        assert app(password).ping()
    acl.write_text(acl_file([new], [DEPLOY_PW]))        # the end: new only
    assert ensure_loaded(args(server), [DEPLOY_PW], acl.read_text())["reloaded"]
    assert client.get("flashmm:k") == b"v"              # the old client is still connected
    with pytest.raises(redis.AuthenticationError):
        app(old).ping()
    assert file_rules(acl.read_text(), APP_USER)[0] == tuple(
        sorted(d if isinstance(d, str) else d.decode() for d in redis.Redis(
            host=server.host, port=server.port, username=DEPLOY_USER,
            password=DEPLOY_PW).acl_getuser(APP_USER)["passwords"]))


def test_acl_reload_with_no_known_password_fails_naming_the_server_not_a_password(acl_redis):
    server, acl, old = acl_redis
    wrong = "Wr0ng-" + secrets.token_urlsafe(12)
    with pytest.raises(AclError) as err:
        ensure_loaded(args(server), [wrong], acl_file([wrong], [wrong]))
    assert f"127.0.0.1:{server.port}" in str(err.value) and wrong not in str(err.value)
    assert old not in str(err.value)


def test_nothing_listening_is_not_an_error(tmp_path):
    from support import _free_port
    port = _free_port()
    assert ensure_loaded(dict(args(type("S", (), {"host": "127.0.0.1", "port": port})), ),
                         ["x"], acl_file(["x"], ["y"])) == \
        {"running": False, "reloaded": False, "default_kept": False}


def test_records_move_in_batches_keep_ttls_and_resume(redis_server, redis_db):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    client = redis_server.client(redis_db)
    plain = {f"flashmm:secure:r{i}": f"value {i}".encode() for i in range(1234)}
    for name, value in plain.items():
        client.set(name, Fernet(old).encrypt(value))
    client.expire("flashmm:secure:r7", 5000)
    client.set("flashmm:secure:garbage", "not a token")
    client.hset("flashmm:secure:hash", "a", "b")
    client.set("flashmm:other", Fernet(old).encrypt(b"not a record"))
    ep = Endpoint(host=redis_server.host, port=redis_server.port, db=redis_db)
    counted = record_keys.migrate(ep, new, old, check=True)
    assert (counted["moved"], counted["records"], counted["unreadable"]) == (1234, 1236, 2)
    partial = record_keys.migrate(ep, new, old, batch=100, max_records=500)
    assert partial["moved"] == 500 and partial["old_only"] == 734
    rest = record_keys.migrate(ep, new, old, batch=100)
    assert (rest["moved"], rest["current"], rest["old_only"]) == (734, 500, 0)
    again = record_keys.migrate(ep, new, old)
    assert again["moved"] == 0 and again["current"] == 1234
    alone = Fernet(new)
    assert all(alone.decrypt(client.get(k).encode()) == v for k, v in plain.items())
    assert 0 < client.ttl("flashmm:secure:r7") <= 5000
    assert client.get("flashmm:secure:garbage") == "not a token"
    assert Fernet(old).decrypt(client.get("flashmm:other").encode()) == b"not a record"


def test_a_record_rewritten_meanwhile_is_left_alone(redis_server, redis_db):
    """The compare-and-set: the write phase replaces only the value it read."""
    from flashmm_deploy.redis.client import Connection
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    client = redis_server.client(redis_db)
    token = Fernet(old).encrypt(b"a")
    client.set("flashmm:secure:x", token)
    client.set("flashmm:secure:x", Fernet(new).encrypt(b"rewritten by the app"))
    ep = Endpoint(host=redis_server.host, port=redis_server.port, db=redis_db)
    with Connection(ep) as conn:
        moved = conn.call("EVAL", record_keys._CAS, 1, "flashmm:secure:x", token,
                          Fernet(new).encrypt(b"a"))
    assert moved == 0
    assert Fernet(new).decrypt(client.get("flashmm:secure:x").encode()) == b"rewritten by the app"


def test_bad_keys_are_refused_without_showing_them(redis_server, redis_db):
    ep = Endpoint(host=redis_server.host, port=redis_server.port, db=redis_db)
    with pytest.raises(record_keys.RecordKeyError) as err:
        record_keys.migrate(ep, "not-a-key-Zq9", None)
    assert "not-a-key-Zq9" not in str(err.value) and "not a Fernet key" in str(err.value)


# ---- the vault steps ---------------------------------------------------------------------

@pytest.fixture
def local_vault(tmp_path):
    from flashmm_deploy.secrets import secret_gen
    from flashmm_deploy.inventory.inventory import Inventory
    inv = copy_inventory("sandbox", tmp_path)
    path = inv / "group_vars" / "all" / "vault.yml"
    path.write_text("# kept comment\nflashmm_secrets:\n  redis_password: first-" +
                    secrets.token_urlsafe(20) + "\nother_var: 1\n")
    secret_gen.update_vault(Inventory(inv), vault_keys())
    return path


def test_begin_resume_finish_and_rerun(local_vault):
    keys = vault_keys()
    before = read_vault(local_vault)["flashmm_secrets"]
    step = rotation.begin(local_vault, keys, "redis", "r1")
    assert step.changed and step.renewed == ["redis_password"]
    mid = read_vault(local_vault)
    assert mid["flashmm_secrets"]["redis_password_previous"] == before["redis_password"]
    assert mid["flashmm_rotations"] == {"redis": {"id": "r1", "state": "rolling"}}
    resumed = rotation.begin(local_vault, keys, "redis", "r1")
    assert resumed.resumed and not resumed.changed
    assert read_vault(local_vault) == mid                      # nothing renewed twice
    with pytest.raises(rotation.RotationError, match="still rolling: finish it"):
        rotation.begin(local_vault, keys, "redis", "r2")
    done = rotation.finish(local_vault, keys, "redis", "r1")
    assert done.changed
    end = read_vault(local_vault)
    assert "redis_password_previous" not in end["flashmm_secrets"]
    assert end["flashmm_secrets"]["redis_password"] == mid["flashmm_secrets"]["redis_password"]
    assert end["other_var"] == 1
    assert "# kept comment" in keys.decrypt(local_vault.read_bytes(), "v").decode()
    raw = local_vault.read_bytes()
    assert not rotation.begin(local_vault, keys, "redis", "r1").changed    # done: nothing
    assert not rotation.finish(local_vault, keys, "redis", "r1").changed
    assert local_vault.read_bytes() == raw


def test_generated_and_api_steps(local_vault):
    keys = vault_keys()
    before = read_vault(local_vault)["flashmm_secrets"]
    gen = rotation.begin(local_vault, keys, "generated", "g1")
    assert gen.renewed == ["secret_key", "api_auth_token"]
    after = read_vault(local_vault)["flashmm_secrets"]
    assert all(after[k] != before[k] for k in gen.renewed)
    api = rotation.begin(local_vault, keys, "api", "a1", {"cambrian_api_key": "new-key-1"})
    assert api.renewed == ["cambrian_api_key"]
    with pytest.raises(rotation.RotationError, match="not a third-party key"):
        rotation.begin(local_vault, keys, "api", "a2", {"secret_key": "x"})
    raw = local_vault.read_bytes()
    for bad, why in (("k{{ x }}", "Jinja2 delimiter"), ("a\nb", "newline")):
        with pytest.raises(rotation.RotationError, match=why) as err:
            rotation.begin(local_vault, keys, "api", "a1", {"twitter_api_key": bad})
        assert bad not in str(err.value)
    assert local_vault.read_bytes() == raw


def test_refusals(tmp_path, local_vault):
    plain = tmp_path / "plain.yml"
    plain.write_text(yaml.safe_dump({"flashmm_secrets": {"redis_password": "x" * 30}}))
    with pytest.raises(rotation.RotationError, match="not an encrypted vault"):
        rotation.begin(plain, vault_keys(), "redis", "r1")
    with pytest.raises(rotation.RotationError, match="no vault to rotate"):
        rotation.begin(tmp_path / "absent.yml", vault_keys(), "redis", "r1")
    with pytest.raises(rotation.RotationError, match="choose one or more"):
        rotation.kinds("passwords")
    assert rotation.kinds("all") == list(rotation.KINDS)
    with pytest.raises(Exception, match="no vault password given"):
        rotation.begin(local_vault, VaultKeys.of_secrets([]), "redis", "r1")


def test_a_redis_that_hangs_is_an_error_not_a_stack_that_is_down():
    """Something listens but never answers: the app must not restart with a new password
    this server may not know, so the reload fails (only a refused connection means "down")."""
    import socket as sockets
    listener = sockets.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    try:
        hung = dict(args(type("S", (), {"host": "127.0.0.1", "port": listener.getsockname()[1]})),
                    timeout=0.5)
        with pytest.raises(AclError) as err:
            ensure_loaded(hung, ["pw-" + secrets.token_urlsafe(8)], acl_file(["x"], ["y"]))
        assert "pw-" not in str(err.value)
    finally:
        listener.close()
