"""The ``flashmm_runtime`` module through real ``ansible-playbook`` runs against a real,
password-protected redis-server (and one with TLS and client certificates): changed then
``changed=0``, check mode writes nothing, drift and enforce, the password never printed (even
with ``-vvv``), clear failures; run by Debian's python3 on the target, as a host would."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from flashmm_deploy.hostside.seed_script import SEEDED_KEY as SEEDED
from flashmm_deploy.hostside.seed_script import render_script
from ports import free_port
from support import (CONF, HZ, POS, ROOT, SEED_DESIRED, VENV_BIN, recap, run, start_redis,
                     stop_redis, tool_env)
from tls_support import make_certs, start_tls_redis

pytestmark = pytest.mark.integration

PASSWORD = "Zq8-module-pw-71c4"
WRONG_PASSWORD = "Wr0ng-module-pw-93a1"
DESIRED = SEED_DESIRED

# The password comes from an extra-vars file, as a vault would provide it: ansible-core 2.19
# prints the playbook lines around a failing task, so a literal in the playbook would leak.
PLAYBOOK = """\
- hosts: seeded
  gather_facts: false
  tasks:
    - name: Seed the runtime layer
      flashmm_runtime:
        script: "{{ lookup('ansible.builtin.file', seed_script) }}"
        port: "{{ seed_port | int }}"
        db: "{{ seed_db | int }}"
        username: "{{ seed_username | default(omit) }}"
        password: "{{ seed_password }}"
        tls: "{{ seed_tls | default(false) }}"
        ca_file: "{{ seed_ca_file | default(omit) }}"
        cert_file: "{{ seed_cert_file | default(omit) }}"
        key_file: "{{ seed_key_file | default(omit) }}"
        mode: "{{ seed_mode | default('keep') }}"
        timeout: 3
      register: seed

    - name: Show the result
      ansible.builtin.debug:
        msg: "SEED_RESULT={{ seed | to_json | b64encode }}"   # one unbreakable word
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_redis(tmp_path_factory.mktemp("redis-module"), "--requirepass", PASSWORD)
    yield s
    stop_redis(s)


_dbs = iter(range(1, 64))


class Play:
    """A playbook + inventory in tmp_path, driving one database of the module's server."""

    def __init__(self, tmp: Path, server, password: str = PASSWORD, client=None):
        self.tmp, self.server, self.db = tmp, server, next(_dbs)
        tmp.mkdir(exist_ok=True)
        self.client = client or server.client(self.db, password=PASSWORD)
        self.client.flushdb()
        # Debian's python3, as inventories/local uses: the module needs its stdlib only
        (tmp / "hosts.ini").write_text(
            "[seeded]\nlocalhost ansible_connection=local"
            " ansible_python_interpreter=/usr/bin/python3\n")
        (tmp / "seed.yml").write_text(PLAYBOOK)
        (tmp / "secrets.json").write_text(json.dumps({"seed_password": password}))
        self.script = tmp / "seed.lua"
        self.write(DESIRED)

    def write(self, desired: dict[str, str]) -> None:
        self.script.write_text(render_script(desired))

    def run(self, *args: str, port: int | None = None, mode: str = "keep", **more):
        extra = {"seed_script": str(self.script), "seed_port": port or self.server.port,
                 "seed_db": self.db, "seed_mode": mode, **more}
        env = tool_env(ANSIBLE_MODULE_UTILS=str(ROOT / "module_utils"))
        return run([str(VENV_BIN / "ansible-playbook"), str(self.tmp / "seed.yml"),
                    "-i", str(self.tmp / "hosts.ini"), "-e", json.dumps(extra),
                    "-e", "@" + str(self.tmp / "secrets.json"), *args],
                   env=env, cwd=self.tmp, timeout=300)

    def dump(self) -> dict:
        c = self.client
        return {k: (c.type(k), c.hgetall(k) if c.type(k) == "hash" else c.get(k))
                for k in c.scan_iter(count=1000)}


def counts(proc) -> dict[str, int]:
    rc = recap(proc.stdout)
    assert "localhost" in rc, proc.stdout + proc.stderr
    return rc["localhost"]


def result_of(proc) -> dict:
    m = re.search(r"SEED_RESULT=([A-Za-z0-9+/=]+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return json.loads(base64.b64decode(m.group(1)))


def test_first_run_changes_second_run_does_not(tmp_path, server):
    play = Play(tmp_path, server)
    first = play.run()
    assert first.returncode == 0, first.stdout + first.stderr
    assert counts(first)["changed"] == 1
    res = result_of(first)
    assert res["changed"] is True and res["changed_keys"] == sorted(DESIRED)
    assert res["version"] == 1 and res["drift"] == {}
    assert {k: play.client.get(k) for k in DESIRED} == DESIRED
    assert play.client.hgetall(SEEDED) == DESIRED

    state = play.dump()
    second = play.run()
    assert second.returncode == 0, second.stdout + second.stderr
    assert counts(second)["changed"] == 0
    assert result_of(second)["changed_keys"] == [] and result_of(second)["version"] == 1
    assert play.dump() == state


def test_check_diff_writes_nothing_and_shows_the_change(tmp_path, server):
    play = Play(tmp_path, server)
    play.client.set(CONF, "0.9")                           # an override, shown as drift
    before = play.dump()
    check = play.run("--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert play.dump() == before
    assert counts(check)["changed"] == 1
    assert f"+{POS} = 2000.0" in check.stdout and f"+{HZ} = 5.0" in check.stdout
    assert f"redis 127.0.0.1:{server.port}/{play.db}" in check.stdout
    res = result_of(check)
    assert res["changed_keys"] == sorted(set(DESIRED) - {CONF})
    assert res["drift"] == {CONF: {"runtime": "0.9", "inventory": "0.7"}}
    assert res["version"] == 0
    assert "runtime override kept" in check.stdout + check.stderr

    assert counts(play.run())["changed"] == 1
    after = play.dump()
    play.write({**DESIRED, HZ: "2.5"})
    check2 = play.run("--check", "--diff")
    assert counts(check2)["changed"] == 1 and play.dump() == after
    assert f"-{HZ} = 5.0" in check2.stdout and f"+{HZ} = 2.5" in check2.stdout
    play.write(DESIRED)
    assert counts(play.run("--check", "--diff"))["changed"] == 0


def test_drift_is_kept_then_enforced(tmp_path, server):
    play = Play(tmp_path, server)
    play.run()
    play.client.set(HZ, "1.5")
    kept = play.run()
    assert counts(kept)["changed"] == 0
    assert result_of(kept)["drift"] == {HZ: {"runtime": "1.5", "inventory": "5.0"}}
    assert play.client.get(HZ) == "1.5"
    enforced = play.run(mode="enforce")
    assert counts(enforced)["changed"] == 1
    res = result_of(enforced)
    assert res["changed_keys"] == [HZ] and res["version"] == 2 and res["drift"] == {}
    assert play.client.get(HZ) == "5.0"


def test_password_never_printed_even_with_vvv(tmp_path, server):
    play = Play(tmp_path, server)
    ok = play.run("-vvv", "--diff")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert counts(ok)["changed"] == 1
    assert "module_args" in ok.stdout                      # -vvv did print the invocation
    assert PASSWORD not in ok.stdout + ok.stderr

    (tmp_path / "bad").mkdir()
    bad = Play(tmp_path / "bad", server, password=WRONG_PASSWORD)
    failed = bad.run("-vvv")
    assert failed.returncode != 0
    assert counts(failed)["failed"] == 1
    out = failed.stdout + failed.stderr
    assert WRONG_PASSWORD not in out and PASSWORD not in out
    assert f"127.0.0.1:{server.port}/{bad.db}" in out and "WRONGPASS" in out
    assert bad.dump() == {}


def test_unreachable_redis_fails_clearly(tmp_path, server):
    port = free_port()                                     # claimed: nothing listens
    play = Play(tmp_path, server)
    proc = play.run(port=port)
    assert proc.returncode != 0
    assert counts(proc)["failed"] == 1
    out = proc.stdout + proc.stderr
    assert f"127.0.0.1:{port}/{play.db}" in out and "kind" in out
    assert PASSWORD not in out


def test_tls_with_client_certificate_and_acl_user(tmp_path):
    """rediss with a CA, a client certificate (tls-auth-clients yes) and an ACL user."""
    certs = make_certs(tmp_path / "certs")
    tls = start_tls_redis(tmp_path / "redis-tls", certs, "--requirepass", PASSWORD,
                          "--user", "seeder", "on", ">seeder-Pw-5e1d", "~flashmm:*",
                          "&flashmm:*", "+@all", auth_clients=True)
    try:
        import redis
        client = redis.Redis(host="127.0.0.1", port=tls.port, db=0, password=PASSWORD,
                             ssl=True, ssl_ca_certs=str(certs.ca), ssl_certfile=str(certs.client_cert),
                             ssl_keyfile=str(certs.client_key), decode_responses=True,
                             socket_timeout=5)
        play = Play(tmp_path / "play", tls, password="seeder-Pw-5e1d", client=client)
        play.db = 0
        files = {"seed_tls": True, "seed_username": "seeder", "seed_ca_file": str(certs.ca),
                 "seed_cert_file": str(certs.client_cert), "seed_key_file": str(certs.client_key)}
        first = play.run("-vvv", **files)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
        assert counts(first)["changed"] == 1
        assert result_of(first)["changed_keys"] == sorted(DESIRED)
        assert "seeder-Pw-5e1d" not in first.stdout + first.stderr
        assert counts(play.run(**files))["changed"] == 0

        wrong_ca = play.run(**dict(files, seed_ca_file=str(certs.other_ca)))
        assert wrong_ca.returncode != 0
        assert "certificate verification failed" in wrong_ca.stdout + wrong_ca.stderr
        no_cert = play.run(**{k: v for k, v in files.items()
                              if k not in ("seed_cert_file", "seed_key_file")})
        assert no_cert.returncode != 0 and "client certificate" in no_cert.stdout + no_cert.stderr
    finally:
        stop_redis(tls)
