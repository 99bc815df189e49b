"""The live runtime layer read from a real Redis: flashmm-config validate/explain --redis."""

from __future__ import annotations

import json

import pytest

from flashmm_deploy.redis_ext.url import mask_url
from support import flashmm_config, start_redis, stop_redis

pytestmark = pytest.mark.integration

KEY = "flashmm:config:trading:quote_frequency_hz"


def url(server, db, password=None):
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{server.host}:{server.port}/{db}"


def test_explain_shows_an_operator_override_winning_over_the_files(redis_server, redis_db):
    client = redis_server.client(redis_db)
    client.set(KEY, "2.5")
    client.set("flashmm:meta:version", "3")                   # bookkeeping: outside the prefix
    client.hset("flashmm:meta:seeded", KEY, "1.0")
    proc = flashmm_config("explain", "inventories/development", "trading.quote_frequency_hz",
                          "--json", "--redis", url(redis_server, redis_db))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["value"] == 2.5 and info["layer"] == "runtime"
    assert info["source"] == f"redis {url(redis_server, redis_db)}"
    assert [s["layer"] for s in info["shadowed"]] == ["defaults", "environment"]


def test_invalid_runtime_values_are_errors_naming_the_runtime_layer(redis_server, redis_db):
    client = redis_server.client(redis_db)
    client.set(KEY, "11")                                      # out of range
    client.set("flashmm:config:app:debug", "true")             # not runtime-overridable
    client.set("flashmm:config:ml:confidence_threshold", "high")   # not JSON
    proc = flashmm_config("validate", "inventories/development", "-q",
                          "--redis", url(redis_server, redis_db))
    assert proc.returncode == 1
    err = proc.stderr
    assert "trading.quote_frequency_hz: Input should be less than or equal to 10 (got 11)" in err
    assert "app.debug: is not runtime-overridable" in err
    assert "ml.confidence_threshold: runtime value is not JSON (got 'high')" in err
    assert err.count("from layer 'runtime', redis redis://") == 3


def test_a_password_never_appears_in_provenance_or_errors(tmp_path):
    password = "CANARY-" + "x" * 24
    server = start_redis(tmp_path / "redis", "--requirepass", password)
    try:
        server.client(2, password=password).set(KEY, "2.5")
        ok = flashmm_config("explain", "inventories/development", "trading.quote_frequency_hz",
                            "--redis", url(server, 2, password))
        assert "2.5" in ok.stdout and "redis redis://:***@127.0.0.1" in ok.stdout
        bad = flashmm_config("explain", "inventories/development", "trading.quote_frequency_hz",
                             "--redis", url(server, 2, "wrong-" + password))
        assert bad.returncode == 2 and "cannot read the runtime layer" in bad.stderr
        for proc in (ok, bad):
            assert password not in proc.stdout + proc.stderr
    finally:
        stop_redis(server)


def test_secret_or_unknown_paths_never_show_their_runtime_value(redis_server, redis_db):
    """A value someone put under flashmm:config:secrets:* (or any unknown path, which may be
    a misplaced secret) is reported by key, never by value, even when it is not JSON."""
    client = redis_server.client(redis_db)
    client.set("flashmm:config:secrets:redis_password", "CANARY-runtime-secret")
    client.set("flashmm:config:secrets:api_auth_token", '"CANARY-json-secret"')
    client.set("flashmm:config:nowhere:thing", "CANARY-unknown")
    for command in (("validate", "inventories/development", "-q"),
                    ("explain", "inventories/development", "secrets.redis_password")):
        proc = flashmm_config(*command, "--redis", url(redis_server, redis_db))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        out = proc.stdout + proc.stderr
        assert "CANARY" not in out
        assert "secrets.redis_password" in out and "nowhere.thing" in out


def test_mask_url_hides_only_the_password():
    assert mask_url("redis://user:s3cret@h:1/2") == "redis://user:***@h:1/2"
    assert mask_url("redis://h:1/2") == "redis://h:1/2"
    for password in ("p#ss", "p/ss", "p?ss", "p@ss"):
        assert password not in mask_url(f"redis://:{password}@h:1/2")
