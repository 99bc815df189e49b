"""flashmm_deploy.redis.client and redis_url without a server: endpoint_from_url for every URL
form (passwords with every special character, encoded or not; IPv6; rediss query parameters),
validation, the password never in a label, URL, mask, repr or error message, and the modules'
contract of being Python 3.8 compatible, standard-library only and free of relative imports."""

from __future__ import annotations

import ast
import pickle
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from flashmm_deploy.redis import client as redis_client
from flashmm_deploy.redis.client import Endpoint, RedisError, ReplyError
from flashmm_deploy.redis_ext.url import endpoint_from_url, endpoint_url, mask_url

MODULE = Path(redis_client.__file__)

# Each password starts and ends with letters, so "not in the output" cannot pass by accident.
SPECIAL_PASSWORDS = [
    "Sx9#Qz", "Sx9/Qz", "Sx9?Qz", "Sx9@Qz", "Sx9:Qz", "Sx9%Qz", "Sx9 Qz", "Sx9%zzQz",
    "Sx9pässwörd✓Qz", "Sx9@@Qz", "Sx9:@/Qz", "Sx9+&=;Qz", "Sx9?db=3&x=@h:1/2#fQz",
    "Sx9 #/?@:% mixedQz", "Sx9@redis.example:6380/1Qz", "Sx9100%",
]


def forms(password: str) -> list[str]:
    """The password as written in a URL: unencoded, and percent-encoded."""
    return [password, quote(password, safe="")]


def assert_hidden(text: str, password: str) -> None:
    for form in {password, quote(password, safe=""), quote(password)}:
        assert form not in text, (form, text)


# ---- from_url: the plain forms ---------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("redis://localhost", dict(host="localhost", port=6379, db=0, tls=False)),
    ("redis://redis.example:6380/2", dict(host="redis.example", port=6380, db=2)),
    ("redis://h/", dict(host="h", db=0)),
    ("redis://h:7000", dict(host="h", port=7000, db=0)),
    ("REDIS://H:1/15", dict(host="H", port=1, db=15)),
    ("rediss://secure.example:6380/1", dict(host="secure.example", port=6380, db=1, tls=True)),
    ("redis://[::1]:6380/3", dict(host="::1", port=6380, db=3)),
    ("redis://[::1]", dict(host="::1", port=6379, db=0)),
    ("rediss://[fe80::1%25eth0]:6379/0", dict(host="fe80::1%eth0", tls=True)),
    ("redis://10.0.0.7:6379/255", dict(host="10.0.0.7", db=255)),
    ("redis://h?db=5", dict(host="h", db=5)),
    ("redis://h/5?db=5", dict(host="h", db=5)),
    ("redis://h?socket_timeout=1.5", dict(timeout=1.5)),
    ("redis://h?timeout=2", dict(timeout=2.0)),
    ("redis://h/1?health_check_interval=10&retry_on_timeout=true", dict(db=1)),
    ("redis://h/1#fragment", dict(db=1)),
])
def test_from_url_plain_forms(url, expected):
    ep = endpoint_from_url(url)
    for name, value in expected.items():
        assert getattr(ep, name) == value, name
    assert ep.username is None and ep.password is None


def test_from_url_userinfo_forms():
    ep = endpoint_from_url("redis://:Pw1@h:6380/2")
    assert (ep.username, ep.password, ep.host, ep.port, ep.db) == (None, "Pw1", "h", 6380, 2)
    ep = endpoint_from_url("redis://alice:Pw1@h")
    assert (ep.username, ep.password) == ("alice", "Pw1")
    ep = endpoint_from_url("redis://:@h")                 # empty userinfo: no credentials
    assert (ep.username, ep.password) == (None, None)
    ep = endpoint_from_url("redis://al%69ce:P%77@h")      # both parts percent-decoded
    assert (ep.username, ep.password) == ("alice", "Pw")


@pytest.mark.parametrize("password", SPECIAL_PASSWORDS)
@pytest.mark.parametrize("username", [None, "alice", "app user@corp"])
@pytest.mark.parametrize("rest", ["redis.example", "redis.example:6380/7",
                                  "[2001:db8::5]:6380/7"])
def test_from_url_special_passwords(password, username, rest):
    for written in forms(password):
        user = quote(username, safe="") if username else ""
        url = "redis://%s:%s@%s" % (user, written, rest)
        ep = endpoint_from_url(url)
        assert ep.password == password, url
        assert ep.username == username
        assert ep.host == ("2001:db8::5" if rest.startswith("[") else "redis.example")
        assert (ep.port, ep.db) == ((6380, 7) if ":" in rest else (6379, 0))
        for text in (ep.label(), endpoint_url(ep), mask_url(url), repr(ep), str(ep)):
            assert_hidden(text, password)
        assert endpoint_from_url(endpoint_url(ep, reveal=True)) == ep


@pytest.mark.parametrize("password", SPECIAL_PASSWORDS)
def test_from_url_special_password_with_tls_query(password, tmp_path):
    for written in forms(password):
        url = ("rediss://alice:%s@127.0.0.1:6390/4?ssl_ca_certs=/etc/ca%%20dir/ca.pem"
               "&ssl_cert_reqs=none&timeout=0.5" % written)
        ep = endpoint_from_url(url)
        assert ep.password == password
        assert (ep.host, ep.port, ep.db, ep.tls) == ("127.0.0.1", 6390, 4, True)
        assert (ep.ca_file, ep.verify, ep.timeout) == ("/etc/ca dir/ca.pem", False, 0.5)
        assert_hidden(mask_url(url), password)


def test_from_url_percent_that_is_not_an_escape_is_kept():
    assert endpoint_from_url("redis://:100%@h").password == "100%"
    assert endpoint_from_url("redis://:a%zzb@h").password == "a%zzb"
    # %FF decodes to bytes that are not UTF-8: the password was not encoded.
    assert endpoint_from_url("redis://:a%FFb@h").password == "a%FFb"
    assert endpoint_from_url("redis://:a%25FFb@h").password == "a%FFb"
    assert endpoint_from_url("redis://:p%C3%A4ss@h").password == "päss"


def test_from_url_rediss_query_parameters():
    ep = endpoint_from_url(
        "rediss://:pw@h:6380/1?ssl_ca_certs=/etc/ssl/ca.pem&ssl_certfile=/c/client.pem"
        "&ssl_keyfile=/c/client.key&ssl_cert_reqs=required&ssl_check_hostname=false"
        "&socket_timeout=2.5")
    assert (ep.tls, ep.ca_file, ep.cert_file, ep.key_file) == (
        True, "/etc/ssl/ca.pem", "/c/client.pem", "/c/client.key")
    assert (ep.verify, ep.check_hostname, ep.timeout) == (True, False, 2.5)
    assert endpoint_from_url("rediss://h?ssl_cert_reqs=CERT_NONE").verify is False
    assert endpoint_from_url("rediss://h?ssl_cert_reqs=none").verify is False
    assert endpoint_from_url("rediss://h?ssl_check_hostname=TRUE").check_hostname is True
    assert endpoint_from_url("rediss://h?server_name=redis.internal").server_name == \
        "redis.internal"
    # A query value with an encoded '@', and one with an unencoded '@' (no userinfo).
    assert endpoint_from_url("rediss://h/0?ssl_ca_certs=/a%40b/ca.pem").ca_file == "/a@b/ca.pem"
    ep = endpoint_from_url("rediss://h/0?ssl_ca_certs=/a@b/ca.pem")
    assert (ep.host, ep.password, ep.ca_file) == ("h", None, "/a@b/ca.pem")
    ep = endpoint_from_url("rediss://:p@ss@h/0?ssl_ca_certs=/a@b/ca.pem")
    assert (ep.host, ep.password, ep.ca_file) == ("h", "p@ss", "/a@b/ca.pem")


def test_from_url_overrides():
    ep = endpoint_from_url("rediss://:pw@h/1?ssl_ca_certs=/ca.pem", db=3, timeout=2,
                           ca_file=None, cert_file=None, username=None)
    assert (ep.db, ep.timeout, ep.ca_file, ep.cert_file) == (3, 2, "/ca.pem", None)
    ep = endpoint_from_url("redis://alice@h", password="from-vault")
    assert (ep.username, ep.password) == ("alice", "from-vault")
    with pytest.raises(RedisError) as err:
        endpoint_from_url("redis://h", dbb=1)
    assert err.value.kind == "input" and "dbb" in str(err.value)


BAD_URLS = [
    ("http://:{pw}@h:6379/0", "scheme"),
    ("unix://:{pw}@/tmp/redis.sock", "scheme"),
    ("{pw}", "not a redis URL"),
    (":{pw}@h:6379", "not a redis URL"),
    ("redis://:{pw}@h:99999/0", "port"),
    ("redis://:{pw}@h:0/0", "port"),
    ("redis://:{pw}@h:abc/0", "port"),
    ("redis://:{pw}@h:/0", "port"),
    ("redis://:{pw}@h/abc", "db"),
    ("redis://:{pw}@h/-1", "db"),
    ("redis://:{pw}@h/1/2", "db"),
    ("redis://:{pw}@h/1?db=2", "db"),
    ("redis://:{pw}@h?db=x", "db"),
    ("redis://:{pw}@", "host"),
    ("redis://:{pw}@:6379", "host"),
    ("redis://:{pw}@::1:6379/0", "IPv6"),
    ("redis://:{pw}@[::1:6379/0", "IPv6"),
    ("redis://:{pw}@[not-ipv6]:6379/0", "IPv6"),
    ("redis://:{pw}@h?nope=1", "nope"),
    ("redis://:{pw}@h?ssl_ca_certs=/ca.pem", "rediss"),
    ("redis://:{pw}@h?password=x", "userinfo"),
    ("redis://:{pw}@h?db", "no value"),
    ("redis://:{pw}@h?db=1&db=1", "twice"),
    ("redis://:{pw}@h?timeout=-1", "timeout"),
    ("redis://:{pw}@h?timeout=abc", "timeout"),
    ("redis://:{pw}@h?timeout=1&socket_timeout=1", "timeout"),
    ("rediss://:{pw}@h?ssl_cert_reqs=optional", "ssl_cert_reqs"),
    ("rediss://:{pw}@h?ssl_check_hostname=maybe", "ssl_check_hostname"),
    ("rediss://:{pw}@h?ssl_keyfile=/k.pem", "key_file"),
]


@pytest.mark.parametrize("url", ["redis://alice@h", "redis://alice:@h/1",
                                 "rediss://alice@h/0?ssl_ca_certs=/a@b.pem"])
def test_username_without_password(url):
    with pytest.raises(RedisError) as err:
        endpoint_from_url(url)
    assert err.value.kind == "input" and "needs a password" in str(err.value)


def test_later_at_outside_the_query_is_not_taken_for_a_host():
    # The last '@' leaves an invalid db path; splitting at the earlier '@' would parse, but the
    # later '@' is not in a query, so that reading (which shows part of the password as a
    # host) is refused, and the mask hides all of the password.
    url = "redis://:Sx9?db=3&x=@h:1/2#fQz@host.example/notadb"
    with pytest.raises(RedisError) as err:
        endpoint_from_url(url)
    assert "db" in str(err.value) and "h:1" not in str(err.value)
    assert mask_url(url) == "redis://:***@host.example/notadb"


@pytest.mark.parametrize("template, problem", BAD_URLS)
@pytest.mark.parametrize("password", ["Sx9pw", "Sx9 #/?@:%pwQz"])
def test_bad_urls_name_the_problem_not_the_password(template, problem, password):
    for written in forms(password):
        url = template.format(pw=written)
        with pytest.raises(RedisError) as err:
            endpoint_from_url(url)
        assert err.value.kind == "input"
        message = str(err.value)
        assert problem in message, message
        assert_hidden(message, password)
        assert_hidden(repr(err.value), password)
        assert err.value.__context__ is None or err.value.__suppress_context__


def test_bad_url_type():
    with pytest.raises(RedisError) as err:
        endpoint_from_url(None)
    assert err.value.kind == "input"


# ---- Endpoint validation, label, url, repr ---------------------------------------------------

@pytest.mark.parametrize("kwargs, problem", [
    (dict(host=""), "host"),
    (dict(host="a b"), "host"),
    (dict(host="redis://h"), "host"),
    (dict(port=0), "port"),
    (dict(port=70000), "port"),
    (dict(port="6379"), "port"),
    (dict(port=True), "port"),
    (dict(db=-1), "db"),
    (dict(db=1.0), "db"),
    (dict(timeout=0), "timeout"),
    (dict(timeout=float("nan")), "timeout"),
    (dict(timeout="5"), "timeout"),
    (dict(tls="yes"), "tls"),
    (dict(username="alice", password=None), "needs a password"),
    (dict(ca_file="/ca.pem"), "without tls"),
    (dict(server_name="x"), "without tls"),
    (dict(tls=True, key_file="/k.pem"), "key_file"),
    (dict(password=123), "password"),
])
def test_endpoint_validation(kwargs, problem):
    kwargs.setdefault("password", "Sx9secretQz")
    with pytest.raises(RedisError) as err:
        Endpoint(**kwargs)
    assert err.value.kind == "input"
    assert problem in str(err.value)
    assert "Sx9secretQz" not in str(err.value)


def test_empty_strings_mean_unset():
    ep = Endpoint(username="", password="", ca_file="", server_name="")
    assert (ep.username, ep.password, ep.ca_file, ep.server_name) == (None, None, None, None)


def test_label():
    assert Endpoint().label() == "127.0.0.1:6379/0"
    assert Endpoint(host="h", port=6380, db=2, tls=True, username="alice",
                    password="Sx9Qz").label() == "h:6380/2 tls user alice"
    assert Endpoint(host="::1", password="Sx9Qz").label() == "[::1]:6379/0"


def test_url_canonical_and_masked():
    assert endpoint_url(Endpoint()) == "redis://127.0.0.1:6379/0"
    ep = Endpoint(host="h", port=6380, db=2, username="alice", password="p@ss/w#rd")
    assert endpoint_url(ep) == "redis://alice:***@h:6380/2"
    assert endpoint_url(ep, reveal=True) == "redis://alice:p%40ss%2Fw%23rd@h:6380/2"
    assert endpoint_url(Endpoint(password="Sx9Qz")) == "redis://:***@127.0.0.1:6379/0"
    ep = Endpoint(host="::1", tls=True, ca_file="/etc/my ca.pem", cert_file="/c.pem",
                  key_file="/k.pem", verify=False, check_hostname=False,
                  server_name="redis.internal", timeout=0.25)
    assert endpoint_url(ep) == ("rediss://[::1]:6379/0?ssl_ca_certs=/etc/my%20ca.pem"
                        "&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&server_name=redis.internal"
                        "&ssl_cert_reqs=none&ssl_check_hostname=false&timeout=0.25")
    assert endpoint_from_url(endpoint_url(ep)) == ep


@pytest.mark.parametrize("ep", [
    Endpoint(),
    Endpoint(host="redis.example", port=6380, db=9, password="Sx9 #/?@:%Qz"),
    Endpoint(host="2001:db8::1", username="a:b@c", password="Sx9ü✓Qz", tls=True,
             ca_file="/x@y/ca.pem", timeout=1.5),
    Endpoint(tls=True, verify=False),
    Endpoint(host="fe80::1%eth0", db=1),
])
def test_url_round_trip(ep):
    assert endpoint_from_url(endpoint_url(ep, reveal=True)) == ep
    assert mask_url(endpoint_url(ep, reveal=True)) == endpoint_url(ep)
    if ep.password:
        assert_hidden(endpoint_url(ep), ep.password)
        assert_hidden(repr(ep), ep.password)
        assert "password" not in repr(ep)


# ---- mask_url --------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "redis://h:6379/0", "rediss://[::1]:6380/1?ssl_ca_certs=/ca.pem",
    "rediss://h/0?ssl_ca_certs=/a@b/ca.pem",
    "https://example.com/path?q=1#top", "https://example.com/@user",
    "https://example.com:8443/@user/repo", "file:///tmp/a@b", "not a url", "",
    "wss://feed.example/ws?stream=btc@trade",
])
def test_mask_url_without_userinfo_is_unchanged(url):
    assert mask_url(url) == url


@pytest.mark.parametrize("password", SPECIAL_PASSWORDS)
@pytest.mark.parametrize("scheme", ["redis", "rediss", "http", "https", "ws", "wss", "amqp"])
def test_mask_url_masks_any_password(scheme, password):
    for written in forms(password):
        url = "%s://alice:%s@host.example:1234/path/0?x=1" % (scheme, written)
        masked = mask_url(url)
        assert masked == "%s://alice:***@host.example:1234/path/0?x=1" % scheme
        assert mask_url(masked) == masked
        url = "%s://:%s@host.example" % (scheme, written)
        assert mask_url(url) == "%s://:***@host.example" % scheme


@pytest.mark.parametrize("url, masked", [
    ("redis://user:123/x@host", "redis://user:***@host"),     # digits-then-'/' password
    ("https://TOKEN@github.com/org/repo", "https://***@github.com/org/repo"),
    ("https://h/x?user=a&password=Sx9Qz&y=1", "https://h/x?user=a&password=***&y=1"),
    ("https://u:Sx9Qz@h/x?ssl_password=Sx9Qz", "https://u:***@h/x?ssl_password=***"),
    ("redis://:Sx9Qz@", "redis://***@"),
    ("weird://:Sx9Qz@[bad", "weird://***@[bad"),
    ("user:Sx9Qz@host", "***@host"),
    ("HTTPS://u:Sx9Qz@[::1]:8443/", "HTTPS://u:***@[::1]:8443/"),
])
def test_mask_url_special_cases(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize("value", [None, 123, b"redis://:pw@h", object()])
def test_mask_url_never_raises(value):
    assert mask_url(value) == "***"


# ---- errors and encoding ---------------------------------------------------------------------

def test_error_types():
    err = RedisError("boom at h:1/0", "connect")
    assert (str(err), err.kind) == ("boom at h:1/0", "connect")
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.kind) == ("boom at h:1/0", "connect")
    assert str(ReplyError("ERR wrong")) == "ERR wrong"
    assert set(redis_client.KINDS) == {"input", "connect", "tls", "auth", "select", "protocol",
                                       "reply"}


def test_command_encoding():
    assert redis_client._encode_command(("SET", "kë", b"\r\n\x00", 42, 1.5, -3)) == (
        b"*6\r\n$3\r\nSET\r\n$3\r\nk\xc3\xab\r\n$3\r\n\r\n\x00\r\n$2\r\n42\r\n"
        b"$3\r\n1.5\r\n$2\r\n-3\r\n")
    for bad in (True, None, ["x"], {"a": 1}):
        with pytest.raises(RedisError) as err:
            redis_client._encode_command(("SET", "k", bad))
        assert err.value.kind == "input" and "argument 2" in str(err.value)
    with pytest.raises(RedisError):
        redis_client._encode_command(())


# ---- the module's contract: Python 3.8, standard library only, no relative imports -----------

# Its siblings: from the package, or (on a target host) from Ansible's module_utils.
SIBLINGS = {"flashmm_deploy", "ansible"}
FILES = ("redis/client", "redis/endpoint", "redis/resp", "redis/tls", "redis_ext/url",
         "redis_ext/pubsub")
PACKAGE = MODULE.parents[1]


@pytest.mark.parametrize("module", [PACKAGE / f"{name}.py" for name in FILES], ids=FILES)
def test_module_is_python38_stdlib_only(module):
    source = module.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 8))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import at line %d" % node.lineno
            imported.append(node.module)
    tops = {name.split(".")[0] for name in imported}
    assert tops, "no imports found: the check is broken"
    assert tops & set(sys.stdlib_module_names) - {"__future__"}, "no standard-library import found"
    not_stdlib = {t for t in tops if t not in sys.stdlib_module_names} - SIBLINGS
    assert not not_stdlib, not_stdlib
    # It never prints: output of an Ansible module must be its JSON only.
    calls = {node.func.id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "print" not in calls
    # No 3.10 syntax hidden in a string annotation evaluated at runtime: only the future import
    # makes annotations lazy.
    assert any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
               for n in tree.body)


def test_endpoint_fields_are_the_documented_ones():
    names = list(Endpoint.__slots__)
    assert names[:12] == ["host", "port", "db", "username", "password", "tls", "ca_file",
                          "cert_file", "key_file", "verify", "server_name", "timeout"]


def test_endpoint_is_immutable_and_compares_by_value():
    a = Endpoint(host="h", port=1, password="pw")
    assert a == Endpoint("h", 1, password="pw") and hash(a) == hash(Endpoint("h", 1, password="pw"))
    assert a != Endpoint(host="h", port=1, password="other")
    with pytest.raises(AttributeError):
        a.port = 2
    with pytest.raises(TypeError, match="multiple values"):
        Endpoint("h", host="x")
    with pytest.raises(TypeError, match="unexpected keyword"):
        Endpoint(hots="h")


@pytest.mark.parametrize("name", ["client", "endpoint", "resp", "tls"])
def test_the_client_imports_ssl_ipaddress_and_no_dataclasses_only_when_needed(name):
    """Every module call on a target imports these files: the costly modules load only for TLS
    (or a bracketed IPv6 host), so none of them may be imported at the top level."""
    tree = ast.parse(MODULE.with_name(f"{name}.py").read_text())
    top = set()
    for node in [n for n in tree.body if not isinstance(n, ast.Try)] + [
            n for t in tree.body if isinstance(t, ast.Try) for n in t.body]:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert not top & {"ssl", "dataclasses", "ipaddress"}, top
