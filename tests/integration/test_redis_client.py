"""flashmm_deploy.redis.client against real redis-server processes (plain, requirepass, ACL
users, TLS with a throw-away CA, mutual TLS) and against small fake servers on 127.0.0.1 that
misbehave on purpose (silent, malformed, truncated, slow); plus the module under a real
Python 3.8 when one is installed."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from urllib.parse import quote

import pytest
import redis
from cryptography.hazmat.primitives import serialization

from flashmm_deploy.redis import client as redis_client
from flashmm_deploy.redis.client import Connection, Endpoint, RedisError, ReplyError
from flashmm_deploy.redis_ext.pubsub import PubSubConnection
from flashmm_deploy.redis_ext.url import endpoint_from_url
from support import _free_port, start_redis, stop_redis
from tls_support import make_certs, start_tls_redis

pytestmark = pytest.mark.integration

PASSWORD = "Zq9 #/?@:%ü-pw-5e1"            # every character a URL parser trips on
ACL_USER, ACL_PASSWORD = "flashmm-app", "Ac1 @#/?:%-user-pw"
TLS_USER, TLS_PASSWORD = "tls-user", "Tl5 #/?@:%-tls-pw"


def leaks(text: str, *secrets: str) -> bool:
    return any(form in text for s in secrets for form in (s, quote(s, safe=""), quote(s)))


def expect_error(endpoint: Endpoint, kind: str, *, secrets=()) -> RedisError:
    """Connect (and PING) expecting RedisError of ``kind``; check it shows no secret."""
    with pytest.raises(RedisError) as err:
        with Connection(endpoint) as conn:
            conn.call("PING")
    exc = err.value
    assert exc.kind == kind, (exc.kind, str(exc))
    for text in (str(exc), repr(exc)):
        assert not leaks(text, *secrets, *([endpoint.password] if endpoint.password else [])), \
            text
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    return exc


# ---- servers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """No password; an ACL user with a password; a user that may not SELECT."""
    server = start_redis(tmp_path_factory.mktemp("plain"))
    admin = redis.Redis(host=server.host, port=server.port, socket_timeout=5)
    admin.execute_command("ACL", "SETUSER", ACL_USER, "on", ">" + ACL_PASSWORD, "~*", "&*",
                          "+@all")
    admin.execute_command("ACL", "SETUSER", "no-select", "on", ">ns-pw", "~*", "&*", "+@all",
                          "-select")
    yield server
    stop_redis(server)


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    """requirepass PASSWORD (set with CONFIG SET: the password holds spaces and quotes)."""
    server = start_redis(tmp_path_factory.mktemp("protected"))
    redis.Redis(host=server.host, port=server.port).config_set("requirepass", PASSWORD)
    yield server
    stop_redis(server)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certs):
    """TLS port only, no client certificate needed, an ACL user."""
    server = start_tls_redis(tmp_path_factory.mktemp("tls"), certs, "--user", TLS_USER, "on",
                             ">" + TLS_PASSWORD, "~*", "&*", "+@all")
    yield server
    stop_redis(server)


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, certs):
    """TLS port only, client certificates required (--tls-auth-clients yes)."""
    server = start_tls_redis(tmp_path_factory.mktemp("mtls"), certs, auth_clients=True)
    yield server
    stop_redis(server)


@contextmanager
def fake_server(handler):
    """A one-connection TCP server on 127.0.0.1 running ``handler(conn)`` in a thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    done = threading.Event()

    def serve():
        try:
            conn, _ = listener.accept()
            with conn:
                handler(conn)
                done.wait(10)       # keep the socket open until the test is finished
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        done.set()
        listener.close()
        thread.join(5)


def _complete_command(data: bytes) -> bool:
    try:
        end = data.index(b"\r\n")
        pos = end + 2
        for _ in range(int(data[1:end])):
            end = data.index(b"\r\n", pos)
            pos = end + 2 + int(data[pos + 1:end]) + 2
    except ValueError:
        return False
    return pos <= len(data)


def read_command(conn: socket.socket) -> bytes:
    """Read one RESP command (an array of bulk strings) from a fake server's client."""
    conn.settimeout(5)
    data = b""
    while not _complete_command(data):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# ---- plain: calls, pipelines, replies --------------------------------------------------------

def test_call_reply_types(plain):
    with Connection(Endpoint(port=plain.port, db=3)) as conn:
        conn.call("FLUSHDB")
        assert conn.call("PING") == "PONG"
        assert conn.call("SET", "k", "välue") == "OK"
        assert conn.call("GET", "k") == "välue".encode("utf-8")
        assert conn.call("GET", "missing") is None
        assert conn.call("INCRBY", "n", 41) == 41 and conn.call("INCR", "n") == 42
        assert conn.call("INCRBYFLOAT", "f", 1.5) == b"1.5"
        binary = b"a\r\nb\x00c$3\r\n"
        assert conn.call("SET", b"bin", binary) == "OK"
        assert conn.call("GET", "bin") == binary
        assert conn.call("RPUSH", "l", "x", "y", 3) == 3
        assert conn.call("LRANGE", "l", 0, -1) == [b"x", b"y", b"3"]
        assert conn.call("LRANGE", "nothing", 0, -1) == []
        assert conn.call("EVAL", "return {1, {2, {'x', {}}}, 'z'}", 0) == \
            [1, [2, [b"x", []]], b"z"]
        assert conn.call("EVAL", "return redis.status_reply('FINE')", 0) == "FINE"
        assert conn.call("EVAL", "return nil", 0) is None
    assert redis.Redis(port=plain.port, db=3).get("k") == "välue".encode("utf-8")


def test_large_replies(plain):
    big = os.urandom(3 * 1024 * 1024)
    with Connection(Endpoint(port=plain.port, db=4)) as conn:
        conn.call("FLUSHDB")
        conn.call("SET", "big", big)
        assert conn.call("GET", "big") == big
        conn.pipeline(*[("RPUSH", "many", *range(i, i + 1000)) for i in range(0, 60000, 1000)])
        values = conn.call("LRANGE", "many", 0, -1)
        assert len(values) == 60000 and values[0] == b"0" and values[-1] == b"59999"


def test_pipeline_and_error_replies(plain):
    with Connection(Endpoint(port=plain.port, db=5)) as conn:
        conn.call("FLUSHDB")
        replies = conn.pipeline(("SET", "s", "v"), ("LPUSH", "s", "x"), ("GET", "s"),
                                ("NOSUCHCOMMAND",), ("INCR", "s"), ("EXISTS", "s"))
        assert replies[0] == "OK" and replies[2] == b"v" and replies[5] == 1
        for index in (1, 3, 4):
            assert isinstance(replies[index], ReplyError)
        assert str(replies[1]).startswith("WRONGTYPE ")
        assert str(replies[3]).startswith("ERR unknown command")
        assert str(replies[4]) == "ERR value is not an integer or out of range"
        assert conn.pipeline() == []
        with pytest.raises(ReplyError) as err:
            conn.call("LPUSH", "s", "x")
        assert str(err.value).startswith("WRONGTYPE")
        assert conn.call("GET", "s") == b"v"          # still in step after an error reply


def test_bad_argument_fails_before_any_io(plain):
    with Connection(Endpoint(port=plain.port)) as conn:
        with pytest.raises(RedisError) as err:
            conn.pipeline(("SET", "k1", "v"), ("SET", "k2", True))
        assert err.value.kind == "input"
        assert conn.call("EXISTS", "k1") == 0          # nothing was sent
        assert conn.call("PING") == "PONG"


def test_select(plain):
    with Connection(Endpoint(port=plain.port, db=7)) as conn:
        conn.call("SET", "where", "seven")
    with Connection(Endpoint(port=plain.port)) as conn:
        assert conn.call("GET", "where") is None
    assert redis.Redis(port=plain.port, db=7).get("where") == b"seven"


def test_db_out_of_range(plain):
    exc = expect_error(Endpoint(port=plain.port, db=300), "select")
    assert "out of range" in str(exc) and "/300" in str(exc)


def test_closed_connection(plain):
    conn = Connection(Endpoint(port=plain.port))
    conn.close()
    conn.close()                                      # idempotent
    with pytest.raises(RedisError) as err:
        conn.call("PING")
    assert err.value.kind == "connect" and "closed" in str(err.value)


def test_auth_against_a_server_without_password(plain):
    exc = expect_error(Endpoint(port=plain.port, password="Unused-pw-77"), "auth")
    assert "without any password configured" in str(exc)


# ---- passwords and ACL users -----------------------------------------------------------------

def test_requirepass_right_password(protected):
    with Connection(Endpoint(port=protected.port, db=2, password=PASSWORD)) as conn:
        assert conn.call("SET", "k", "v") == "OK"
        # The server echoes arguments in some errors: the password never comes back out.
        with pytest.raises(ReplyError) as err:
            conn.call("NOSUCHCOMMAND", PASSWORD)
        assert "NOSUCHCOMMAND" in str(err.value) and not leaks(str(err.value), PASSWORD)
        assert not leaks(repr(conn), PASSWORD)


def test_requirepass_url_with_unencoded_special_password(protected):
    url = "redis://:%s@127.0.0.1:%d/2" % (PASSWORD, protected.port)
    with Connection(endpoint_from_url(url)) as conn:
        assert conn.call("PING") == "PONG"


def test_requirepass_wrong_and_missing_password(protected):
    exc = expect_error(Endpoint(port=protected.port, password="Wr0ng #/?@ pw"), "auth",
                       secrets=[PASSWORD])
    assert "WRONGPASS" in str(exc) and "refused authentication" in str(exc)
    exc = expect_error(Endpoint(port=protected.port), "auth")
    assert "NOAUTH" in str(exc) and "requires a password" in str(exc)
    exc = expect_error(Endpoint(port=protected.port, db=3), "auth")
    assert "NOAUTH" in str(exc)


def test_acl_user(plain):
    ep = Endpoint(port=plain.port, db=1, username=ACL_USER, password=ACL_PASSWORD)
    with Connection(ep) as conn:
        assert conn.call("ACL", "WHOAMI") == ACL_USER.encode()
    url = "redis://%s:%s@127.0.0.1:%d/1" % (ACL_USER, ACL_PASSWORD, plain.port)
    with Connection(endpoint_from_url(url)) as conn:
        assert conn.call("ACL", "WHOAMI") == ACL_USER.encode()
    exc = expect_error(Endpoint(port=plain.port, username=ACL_USER, password="Not " + ACL_USER),
                       "auth", secrets=[ACL_PASSWORD])
    assert "WRONGPASS" in str(exc) and "user " + ACL_USER in str(exc)
    # A user whose ACL forbids SELECT: the setup round trip reports it as an auth problem.
    exc = expect_error(Endpoint(port=plain.port, db=2, username="no-select", password="ns-pw"),
                       "auth")
    assert "NOPERM" in str(exc)


# ---- connect failures ------------------------------------------------------------------------

def test_dead_port_fails_fast():
    started = time.monotonic()
    exc = expect_error(Endpoint(port=_free_port(), password="Dead-port-pw", timeout=3), "connect")
    assert time.monotonic() - started < 1
    assert "refused" in str(exc).lower()


@pytest.mark.parametrize("tls", [False, True])
def test_silent_server_times_out_within_the_timeout(tls):
    listener = socket.socket()        # accepts (via the backlog) but never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        ep = Endpoint(port=listener.getsockname()[1], tls=tls, verify=False, timeout=0.5,
                      password="Silent-pw")
        started = time.monotonic()
        exc = expect_error(ep, "connect")
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert 0.4 < elapsed < 1.2, elapsed
    assert "timed out" in str(exc)
    if tls:
        assert "TLS handshake" in str(exc)


def test_timeout_mid_call_breaks_the_connection():
    def handler(conn):
        read_command(conn)
        conn.sendall(b"+PONG\r\n")      # the setup PING
        read_command(conn)              # then silence
    with fake_server(handler) as port:
        conn = Connection(Endpoint(port=port, timeout=0.3))
        started = time.monotonic()
        with pytest.raises(RedisError) as err:
            conn.call("GET", "k")
        assert err.value.kind == "connect" and "timed out" in str(err.value)
        assert time.monotonic() - started < 1
        with pytest.raises(RedisError) as err:       # a late reply would be out of step
            conn.call("PING")
        assert err.value.kind == "connect" and "unusable" in str(err.value)


@pytest.mark.parametrize("reply, problem", [
    (b"?what\r\n", "unexpected reply type"),
    (b":12a\r\n", "malformed integer"),
    (b"$5\r\nabcdefgh\r\n", "longer than its length"),
    (b"$-7\r\n", "negative bulk length"),
    (b"*2\r\n$1\r\na\r\n", "closed the connection in the middle of a reply"),
    (b"$10\r\nabc", "closed the connection in the middle of a reply"),
    (b"+" + b"x" * (redis_client.MAX_LINE + 10), "longer than"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "is it a Redis server"),
])
def test_malformed_and_truncated_replies(reply, problem):
    def handler(conn):
        read_command(conn)
        conn.sendall(reply)
        conn.shutdown(socket.SHUT_WR)
    with fake_server(handler) as port:
        exc = expect_error(Endpoint(port=port, timeout=3), "protocol")
    assert problem in str(exc)


def test_server_echoing_the_password_is_scrubbed():
    secret = "Echo #/?@ pw-91"

    def handler(conn):
        read_command(conn)
        conn.sendall(b"-ERR invalid password '" + secret.encode() + b"'\r\n")
    with fake_server(handler) as port:
        exc = expect_error(Endpoint(port=port, password=secret), "auth")
    assert "invalid password" in str(exc) and "***" in str(exc)


# ---- pub/sub ---------------------------------------------------------------------------------

def test_pubsub(plain):
    ep = Endpoint(port=plain.port, timeout=2)
    with PubSubConnection(ep) as sub, Connection(ep) as pub:
        sub.subscribe("flashmm:test:a", "flashmm:test:b")
        assert pub.call("PUBLISH", "flashmm:test:b", b"\x00payload") == 1
        assert sub.read_message(timeout=2) == ("message", "flashmm:test:b", b"\x00payload")
        started = time.monotonic()
        assert sub.read_message(timeout=0.2) is None
        assert 0.15 < time.monotonic() - started < 1
        assert sub.read_message(timeout=0) is None
        pub.call("PUBLISH", "flashmm:test:a", "one")      # still usable after a timeout
        pub.call("PUBLISH", "flashmm:test:a", "two")
        assert sub.read_message(timeout=2) == ("message", "flashmm:test:a", b"one")
        assert sub.read_message() == ("message", "flashmm:test:a", b"two")
        sub.subscribe("flashmm:test:c")                   # more channels later
        assert pub.call("PUBLISH", "flashmm:test:c", "three") == 1
        assert sub.read_message(timeout=2) == ("message", "flashmm:test:c", b"three")
        with pytest.raises(RedisError) as err:
            sub.call("GET", "k")
        assert err.value.kind == "input" and "subscribed" in str(err.value)
    with PubSubConnection(ep) as conn, pytest.raises(RedisError):
        conn.read_message(timeout=0.1)                   # not subscribed


def test_read_message_resumes_a_message_cut_by_its_timeout():
    message = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$11\r\nhello world\r\n"

    def handler(conn):
        read_command(conn)
        conn.sendall(b"+PONG\r\n")
        read_command(conn)
        conn.sendall(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n" + message[:30])
        time.sleep(0.5)
        conn.sendall(message[30:])
    with fake_server(handler) as port:
        with PubSubConnection(Endpoint(port=port, timeout=3)) as conn:
            conn.subscribe("ch")
            assert conn.read_message(timeout=0.2) is None       # half a message so far
            assert conn.read_message(timeout=3) == ("message", "ch", b"hello world")


# ---- TLS -------------------------------------------------------------------------------------

def test_tls_with_the_ca(tls_server, certs):
    for host in ("127.0.0.1", "localhost"):
        ep = Endpoint(host=host, port=tls_server.port, tls=True, ca_file=str(certs.ca), db=2)
        with Connection(ep) as conn:
            conn.call("SET", "tls", b"ok")
            assert conn.call("GET", "tls") == b"ok"


def test_tls_wrong_ca_fails_verification(tls_server, certs):
    exc = expect_error(Endpoint(port=tls_server.port, tls=True, ca_file=str(certs.other_ca),
                                password=TLS_PASSWORD, username=TLS_USER), "tls")
    assert "certificate verification failed" in str(exc)
    # The system CAs do not know the test CA either.
    exc = expect_error(Endpoint(port=tls_server.port, tls=True), "tls")
    assert "certificate verification failed" in str(exc)
    # Without verification the same server is reachable.
    with Connection(Endpoint(port=tls_server.port, tls=True, verify=False)) as conn:
        assert conn.call("PING") == "PONG"


def test_tls_host_name_is_checked(tls_server, certs):
    ep = Endpoint(port=tls_server.port, tls=True, ca_file=str(certs.ca),
                  server_name="redis.elsewhere.example")
    exc = expect_error(ep, "tls")
    assert "certificate verification failed" in str(exc)
    assert "redis.elsewhere.example" in str(exc)
    with Connection(Endpoint(port=tls_server.port, tls=True, ca_file=str(certs.ca),
                             server_name="localhost")) as conn:
        assert conn.call("PING") == "PONG"


def test_tls_acl_user_and_url(tls_server, certs):
    ep = Endpoint(port=tls_server.port, tls=True, ca_file=str(certs.ca), username=TLS_USER,
                  password=TLS_PASSWORD, db=1)
    with Connection(ep) as conn:
        assert conn.call("ACL", "WHOAMI") == TLS_USER.encode()
    url = "rediss://%s:%s@127.0.0.1:%d/1?ssl_ca_certs=%s&socket_timeout=2" % (
        TLS_USER, TLS_PASSWORD, tls_server.port, certs.ca)
    parsed = endpoint_from_url(url)
    assert (parsed.tls, parsed.ca_file, parsed.password) == (True, str(certs.ca), TLS_PASSWORD)
    with Connection(parsed) as conn:
        assert conn.call("ACL", "WHOAMI") == TLS_USER.encode()
    exc = expect_error(Endpoint(port=tls_server.port, tls=True, ca_file=str(certs.ca),
                                username=TLS_USER, password="Wrong-tls-pw"), "auth",
                       secrets=[TLS_PASSWORD])
    assert "WRONGPASS" in str(exc)


def test_plain_client_on_a_tls_port(tls_server):
    exc = expect_error(Endpoint(port=tls_server.port, timeout=2), "connect")
    assert "TLS" in str(exc)


def test_tls_client_on_a_plain_port(plain):
    exc = expect_error(Endpoint(port=plain.port, tls=True, verify=False, timeout=0.5),
                       "connect")
    assert "TLS handshake" in str(exc)


def test_mutual_tls(mtls_server, certs):
    base = dict(port=mtls_server.port, tls=True, ca_file=str(certs.ca))
    exc = expect_error(Endpoint(**base), "tls")
    assert "client certificate" in str(exc)
    # The server certificate is not for client authentication: rejected too.
    exc = expect_error(Endpoint(**base, cert_file=str(certs.server_cert),
                                key_file=str(certs.server_key)), "tls")
    assert "rejected the client certificate" in str(exc)   # alert or close: a race
    with Connection(Endpoint(**base, cert_file=str(certs.client_cert),
                             key_file=str(certs.client_key))) as conn:
        assert conn.call("PING") == "PONG"
    url = "rediss://127.0.0.1:%d/0?ssl_ca_certs=%s&ssl_certfile=%s&ssl_keyfile=%s" % (
        mtls_server.port, certs.ca, certs.client_cert, certs.client_key)
    with Connection(endpoint_from_url(url)) as conn:
        assert conn.call("PING") == "PONG"


def test_tls_files_that_do_not_load(tls_server, certs, tmp_path):
    exc = expect_error(Endpoint(port=tls_server.port, tls=True,
                                ca_file=str(tmp_path / "missing-ca.pem")), "tls")
    assert "missing-ca.pem" in str(exc)
    exc = expect_error(Endpoint(port=tls_server.port, tls=True, ca_file=str(certs.ca),
                                cert_file=str(certs.client_cert),
                                key_file=str(certs.server_key)), "tls")   # key mismatch
    assert "client certificate" in str(exc) and "KEY_VALUES_MISMATCH" in str(exc)
    # An encrypted key fails (no passphrase option) instead of prompting on the terminal.
    key = serialization.load_pem_private_key(certs.client_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"Key-pw-1")))
    exc = expect_error(Endpoint(port=tls_server.port, tls=True, ca_file=str(certs.ca),
                                cert_file=str(certs.client_cert), key_file=str(encrypted)),
                       "tls")
    assert "encrypted key" in str(exc)


# ---- Python 3.8 ------------------------------------------------------------------------------

def _python38():
    """A working Python 3.8 interpreter (pyenv's, or python3.8 on PATH), or None."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    candidates += [p for p in [shutil.which("python3.8")] if p]
    for python in candidates:
        try:
            probe = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                                   capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 8)":
            return python
    return None


def test_runs_under_python38(protected, tls_server, certs, tmp_path):
    python = _python38()
    if python is None:
        pytest.skip("no Python 3.8 interpreter on this machine")
    shipped = tmp_path / "lib"          # the files alone, without the rest of the package
    package = Path(redis_client.__file__).parents[1]
    for name in ("__init__", "redis/__init__", "redis/client", "redis/endpoint", "redis/resp",
                 "redis/tls", "redis_ext/__init__", "redis_ext/url"):
        (shipped / "flashmm_deploy" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(package / (name + ".py"), shipped / "flashmm_deploy" / (name + ".py"))
    script = """
import sys
sys.path.insert(0, sys.argv[1])
from flashmm_deploy.redis import client as rc
from flashmm_deploy.redis_ext import url as redis_url
assert sys.version_info[:2] == (3, 8), sys.version
url = "redis://:%s@127.0.0.1:%s/2" % (sys.argv[2], sys.argv[3])
with rc.Connection(redis_url.endpoint_from_url(url)) as conn:
    conn.call("SET", "py38", "yes")
    assert conn.call("GET", "py38") == b"yes"
    assert isinstance(conn.pipeline(("INCR", "py38"),)[0], rc.ReplyError)
assert sys.argv[2] not in redis_url.mask_url(url)
tls = rc.Endpoint(port=int(sys.argv[4]), tls=True, ca_file=sys.argv[5])
with rc.Connection(tls) as conn:
    assert conn.call("PING") == "PONG"
print("ok")
"""
    result = subprocess.run(
        [python, "-I", "-c", script, str(shipped), PASSWORD,
         str(protected.port), str(tls_server.port), str(certs.ca)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
