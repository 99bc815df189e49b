"""``flashmm-config runtime get|list|set|unset|watch`` against a real redis-server: validated
with the host's inventory, written and published as deploy does, refusals change nothing."""

from __future__ import annotations

import subprocess

import pytest

from support import VENV_BIN, copy_inventory, flashmm_config, tool_env

pytestmark = pytest.mark.integration

HZ_KEY = "flashmm:config:trading:quote_frequency_hz"


def test_runtime_commands(tmp_path, redis_server, redis_db):
    inv = str(copy_inventory("sandbox", tmp_path))
    url = f"redis://{redis_server.host}:{redis_server.port}/{redis_db}"
    client = redis_server.client(redis_db)
    where = ("--host", "local-1", "--redis", url)

    watch = subprocess.Popen([str(VENV_BIN / "flashmm-config"), "runtime", "watch", inv, *where,
                              "--count", "2"], env=tool_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout.readline().startswith("watching flashmm:config:updates on redis")
        done = flashmm_config("runtime", "set", inv, "trading.quote_frequency_hz", "2.5", *where,
                              "--actor", "cli-test")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("set trading.quote_frequency_hz on host local-1: version "
                                      "1, published on flashmm:config:updates")
        assert client.get(HZ_KEY) == "2.5" and client.get("flashmm:meta:version") == "1"

        # every key, of any type (the runtime sets' audit list is a list)
        before = {k: client.dump(k) for k in client.scan_iter("*")}
        refused = flashmm_config("runtime", "set", inv, "trading.quote_frequency_hz", "11", *where)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1
        assert refused.stderr.startswith("flashmm-config: refused: trading.quote_frequency_hz: "
                                         "refused, trading.quote_frequency_hz = 11.0 breaks a "
                                         "rule: Input should be less than or equal to 10")
        assert "nothing written" in refused.stderr
        bad_type = flashmm_config("runtime", "set", inv, "monitoring.alert_enabled", "yes", *where)
        assert bad_type.returncode == 1 and "expected a boolean" in bad_type.stderr
        other = flashmm_config("runtime", "set", inv, "api.port", "9000", *where)
        assert other.returncode == 2 and "api.port: not a runtime key" in other.stderr
        assert {k: client.dump(k) for k in client.scan_iter("*")} == before

        got = flashmm_config("runtime", "get", inv, "trading.quote_frequency_hz", *where)
        assert got.stdout.startswith("trading.quote_frequency_hz = 2.5   (layer 'runtime', "
                                     f"redis 127.0.0.1:{redis_server.port}/{redis_db})")
        listed = flashmm_config("runtime", "list", inv, *where).stdout.splitlines()
        assert [line.split(" = ")[0] for line in listed[:4]] == [
            "trading.max_position_usdc", "trading.quote_frequency_hz", "ml.confidence_threshold",
            "monitoring.alert_enabled"]
        assert "layer 'environment'" in listed[0] and listed[4].startswith("runtime layer version 1")

        unset = flashmm_config("runtime", "unset", inv, "trading.quote_frequency_hz", *where)
        assert unset.returncode == 0 and client.get(HZ_KEY) is None
        assert "trading.quote_frequency_hz = 1.0   (layer 'environment'" in unset.stdout
        out, err = watch.communicate(timeout=30)
    finally:
        if watch.poll() is None:
            watch.kill()
    lines = [line.split(" ", 1)[1] for line in out.splitlines() if " version: " not in line]
    assert lines[0].startswith("trading.quote_frequency_hz = 2.5   (layer 'runtime'")
    assert lines[1].startswith("trading.quote_frequency_hz = 1.0   (layer 'environment'")
    assert '"actor":"cli-test"' in out and watch.returncode == 0 and err == ""
