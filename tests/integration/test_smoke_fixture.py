import pytest

from support import flashmm_config

pytestmark = pytest.mark.integration


def test_redis_fixture_gives_an_empty_database(redis_server, redis_db):
    client = redis_server.client(redis_db)
    assert client.dbsize() == 0
    client.set("k", "v")
    assert client.get("k") == "v"


def test_cli_validates_the_local_inventory():
    proc = flashmm_config("validate", "inventories/local", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "3 host(s) valid" in proc.stdout
