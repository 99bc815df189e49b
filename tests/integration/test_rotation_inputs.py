"""What an operator types into a rotation, end to end without a stack (real ansible-playbook,
local hosts, a real redis-server): new API keys are data, never templates (a file the toolkit
reads, plain or ansible-vault encrypted; ``-e @file`` read raw; ``flashmm-config secrets
set``), and every run without an explicit id is a rotation of its own (issue 15 item 1,
issue 14 case 6)."""

from __future__ import annotations

import datetime
import re
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml
from dotenv import dotenv_values

from flashmm_deploy.plan.sandbox import make_local_inventory
from redis_support import SiteSnapshot
from support import (INVENTORIES, VENV_BIN, allocate_dbs, ansible_playbook, read_vault, recap,
                     run, snapshot_files, tool_env)

pytestmark = pytest.mark.integration
HOSTS = ("sandbox-01", "sandbox-02")


class Site:
    def __init__(self, tmp: Path, server):
        self.tmp = tmp
        self.dbs = dbs = allocate_dbs(server, len(HOSTS))
        self.sandbox = tmp / "sandbox"
        self.inventory = make_local_inventory(INVENTORIES / "local", tmp / "inventory",
                                              hosts=len(HOSTS), redis_port=server.port,
                                              first_db=dbs[0], sandbox=self.sandbox)
        self.vault_path = self.inventory / "group_vars" / "all" / "vault.yml"
        self.env = tool_env()

    def play(self, playbook: str, *args: str) -> subprocess.CompletedProcess:
        return ansible_playbook(playbook, self.inventory, *args, env=self.env)

    def rotate(self, kind: str, *args: str) -> subprocess.CompletedProcess:
        return self.play("playbooks/rotate_secrets.yml", "-e", f"rotate={kind}", *args)

    def vault(self) -> dict:
        return read_vault(self.vault_path)

    def env_of(self, host: str) -> dict:
        return dotenv_values(self.sandbox / host / ".env")

    def files(self) -> dict:
        return snapshot_files(self.sandbox)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, redis_server) -> tuple[Site, SiteSnapshot]:
    """One deploy for the module, kept as it left the site (inventory, sandbox, keys)."""
    s = Site(tmp_path_factory.mktemp("rotation-inputs"), redis_server)
    ok(s.play("deploy.yml"))
    return s, SiteSnapshot(redis_server, s.dbs, [s.tmp], tmp_path_factory.mktemp("deployed"))


@pytest.fixture
def site(deployed) -> Site:
    """A site just after its first deploy, for a test to change as it likes (put back without
    a run: a deploy per test cost ~1.4 s of CPU)."""
    s, snapshot = deployed
    snapshot.restore()
    return s


def encrypt_file(path: Path) -> None:
    """ansible-vault encrypt, as an operator would, with the local environment's vault id."""
    proc = run([str(VENV_BIN / "ansible-vault"), "encrypt", "--encrypt-vault-id", "local",
                str(path)])
    assert proc.returncode == 0, proc.stderr


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


# ---- values are data ---------------------------------------------------------------------

def test_new_keys_from_a_file_reach_the_vault_and_every_env_as_they_are(site):
    token = secrets.token_urlsafe(12)
    # braces that are no Jinja2 delimiter are data like any other character
    new = {"cambrian_api_key": f"cam-}}}}{token}-{{x", "cambrian_secret_key": f"cs-%}}{token}"}
    plain = site.tmp / "new-keys.yml"
    plain.write_text(yaml.safe_dump(new))
    proc = ok(site.rotate("api", "-e", f"rotate_new_values_file={plain}", "-vvv"))
    vault = site.vault()
    assert {k: vault["flashmm_secrets"][k] for k in new} == new
    for host in HOSTS:
        assert site.env_of(host)["CAMBRIAN_API_KEY"] == new["cambrian_api_key"]
        assert site.env_of(host)["CAMBRIAN_SECRET_KEY"] == new["cambrian_secret_key"]
    assert token not in proc.stdout + proc.stderr
    assert re.fullmatch(rf"{today()}\.\d+", vault["flashmm_rotations"]["api"]["id"])

    # an ansible-vault encrypted file, in the form `-e @file` took (rotate_new_values: {...})
    again = {"cambrian_api_key": "cam2-" + secrets.token_urlsafe(16)}
    encrypted = site.tmp / "new-keys.vault.yml"
    encrypted.write_text(yaml.safe_dump({"rotate_new_values": again}))
    encrypt_file(encrypted)
    proc = ok(site.rotate("api", "-e", f"rotate_new_values_file={encrypted}", "-vvv"))
    assert site.vault()["flashmm_secrets"]["cambrian_api_key"] == again["cambrian_api_key"]
    for host in HOSTS:
        assert site.env_of(host)["CAMBRIAN_API_KEY"] == again["cambrian_api_key"]
    assert again["cambrian_api_key"] not in proc.stdout + proc.stderr


def _hostile_values(marker: Path, token: str) -> dict[str, str]:
    """Values that Ansible would template (the lookup runs a command that creates ``marker``),
    and one it would fail on, quoting the line (the broken brace)."""
    return {
        "lookup": f"SECRETVALUE{token}-{{{{ lookup('ansible.builtin.pipe', "
                  f"'touch {marker} && echo ran-$(hostname)') }}}}",
        "statement": f"SECRETVALUE{token}-{{% if true %}}x{{% endif %}}",
        "comment": f"SECRETVALUE{token}-{{# note #}}",
        "broken brace": f"SECRETVALUE{token}-{{{{brace",
    }


def test_each_template_form_is_refused_naming_the_key_never_the_value(tmp_path):
    """The toolkit's reader alone (no Ansible): every form, from a plain and an encrypted file."""
    from flashmm_deploy.secrets import rotation
    from support import vault_keys

    marker = tmp_path / "marker"
    token = secrets.token_hex(8)
    for label, value in _hostile_values(marker, token).items():
        for name in ("cambrian_api_key", "twitter_api_secret"):
            path = tmp_path / f"{name}.yml"
            path.write_text(yaml.safe_dump({name: value}))
            for encrypted in (False, True):
                if encrypted:
                    encrypt_file(path)
                with pytest.raises(rotation.RotationError) as err:
                    rotation.read_new_values(path, vault_keys())
                message = str(err.value)
                assert f"new API key {name}: holds" in message and "Jinja2 delimiter" in message
                assert token not in message and "SECRETVALUE" not in message, label
    assert not marker.exists()


# Four keys, one form each: Ansible, given these, would run the lookup or fail quoting a line
KEYS = ("cambrian_api_key", "cambrian_secret_key", "twitter_api_key", "twitter_api_secret")
ROUTES = ("file", "encrypted file", "-e @file", "-e json")


@pytest.mark.parametrize("route", ROUTES)
def test_templated_values_are_refused_by_the_toolkit_and_nothing_runs(site, route):
    marker = site.tmp / f"marker-{secrets.token_hex(4)}"
    token = secrets.token_hex(8)
    values = dict(zip(KEYS, _hostile_values(marker, token).values()))
    before_vault, before_files = site.vault_path.read_bytes(), site.files()
    keys_file = site.tmp / "new-keys.yml"
    if route == "-e json":
        args = ("-e", yaml.safe_dump({"rotate_new_values": values}, default_flow_style=True,
                                     width=10_000).strip())
    elif route == "-e @file":                   # the reproduction of issue 15 item 1
        keys_file.write_text(yaml.safe_dump({"rotate_new_values": values}))
        args = ("-e", f"@{keys_file}")
    else:
        keys_file.write_text(yaml.safe_dump(values))
        if route == "encrypted file":
            encrypt_file(keys_file)
        args = ("-e", f"rotate_new_values_file={keys_file}")
    proc = site.rotate("api", *args, "-vvv")
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, out[-3000:]
    assert "new API key cambrian_api_key: holds '{{', a Jinja2 delimiter" in out, out[-3000:]
    assert "template error" not in out.lower(), "Ansible's own message"
    assert not marker.exists(), "the lookup ran"
    for part in (token, "SECRETVALUE", marker.name, "ran-"):
        assert part not in out, f"{part!r} in the output"
    assert site.vault_path.read_bytes() == before_vault
    assert site.files() == before_files


def test_a_template_as_the_variable_keys_for_another_kind_bad_yaml_or_id_are_refused(site):
    marker = site.tmp / "marker-var"
    before = site.vault_path.read_bytes()
    proc = site.rotate("api", "-e", f"rotate_new_values={{{{ lookup('ansible.builtin.pipe', "
                       f"'touch {marker}') }}}}", "-vvv")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "rotate_new_values: holds a Jinja2 template" in out, out[-3000:]
    assert not marker.exists() and marker.name not in out
    keys_file = site.tmp / "keys.yml"
    keys_file.write_text(yaml.safe_dump({"cambrian_api_key": "k-" + secrets.token_hex(8)}))
    proc = site.rotate("generated", "-e", f"rotate_new_values_file={keys_file}")
    assert proc.returncode != 0
    assert "new API key values are for rotate=api, not generated" in proc.stdout + proc.stderr
    bad = site.tmp / "bad.yml"
    bad.write_text("cambrian_api_key: [SECRETVALUE-" + secrets.token_hex(4) + "\n")
    proc = site.rotate("api", "-e", f"rotate_new_values_file={bad}")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "invalid YAML (content hidden)" in out, out[-3000:]
    assert "SECRETVALUE" not in out
    proc = site.rotate("generated", "-e", "rotation_id=../x")
    assert proc.returncode != 0 and "rotation_id '../x': expected" in proc.stdout + proc.stderr
    assert site.vault_path.read_bytes() == before


def test_secrets_set_takes_the_value_from_stdin_as_data(site):
    value = "cam-" + secrets.token_urlsafe(20)
    args = ("secrets", "set", str(site.inventory), "cambrian_api_key")
    proc = subprocess.run([str(VENV_BIN / "flashmm-config"), *args], input=value + "\n",
                          capture_output=True, text=True, env=site.env, cwd=site.tmp)
    assert proc.returncode == 0, proc.stderr
    assert "cambrian_api_key: set in" in proc.stdout and value not in proc.stdout + proc.stderr
    vault = site.vault()
    assert vault["flashmm_secrets"]["cambrian_api_key"] == value
    assert vault["flashmm_secrets_generation"]["id"] == "secrets set cambrian_api_key"
    before = site.vault_path.read_bytes()
    for name, given, message in (
            ("cambrian_api_key", "SECRETVALUE-{{ lookup('env', 'HOME') }}", "Jinja2 delimiter"),
            ("cambrian_api_key", "SECRETVALUE-{{brace", "Jinja2 delimiter"),
            ("cambrian_api_key", "SECRETVALUE-it's", "single quote"),
            ("redis_password", "SECRETVALUE", "rotate it: rotate_secrets.yml -e rotate=redis"),
            ("nonsense", "SECRETVALUE", "only third-party keys are set this way")):
        bad = subprocess.run([str(VENV_BIN / "flashmm-config"), "secrets", "set",
                              str(site.inventory), name], input=given, capture_output=True,
                             text=True, env=site.env, cwd=site.tmp)
        assert bad.returncode == 2 and message in bad.stderr, (name, bad.stderr)
        assert "SECRETVALUE" not in bad.stdout + bad.stderr
    assert site.vault_path.read_bytes() == before
    same = subprocess.run([str(VENV_BIN / "flashmm-config"), *args], input=value,
                          capture_output=True, text=True, env=site.env, cwd=site.tmp)
    assert same.returncode == 0 and "unchanged" in same.stdout
    assert site.vault_path.read_bytes() == before
    # the rotation rolls what the vault holds
    ok(site.rotate("api"))
    for host in HOSTS:
        assert site.env_of(host)["CAMBRIAN_API_KEY"] == value


# ---- rotation ids ------------------------------------------------------------------------

def test_each_run_is_a_new_rotation_unless_one_is_rolling(site):
    first = ok(site.rotate("generated"))
    after_first = site.vault()
    id1 = after_first["flashmm_rotations"]["generated"]["id"]
    assert re.fullmatch(rf"{today()}\.\d+", id1)
    assert after_first["flashmm_rotations"]["generated"]["state"] == "done"
    assert after_first["flashmm_secrets_generation"]["id"] == f"rotation {id1} generated: finish"
    assert f"generated: rotation {id1} begins" in first.stdout

    # the same day again (say, after a leak): a rotation, not a no-op
    ok(site.rotate("generated"))
    after_second = site.vault()
    id2 = after_second["flashmm_rotations"]["generated"]["id"]
    assert id2 != id1 and id2.startswith(today() + ".")
    assert (after_second["flashmm_secrets"]["secret_key"]
            != after_first["flashmm_secrets"]["secret_key"])
    for host in HOSTS:
        assert site.env_of(host)["SECRET_KEY"] == after_second["flashmm_secrets"]["secret_key"]

    # an explicit id of a finished rotation: nothing changes
    raw = site.vault_path.read_bytes()
    again = ok(site.rotate("generated", "-e", f"rotation_id={id2}"))
    assert site.vault_path.read_bytes() == raw
    assert all(r["changed"] == 0 for r in recap(again.stdout).values()), recap(again.stdout)
    assert f"rotation done already: {id2}" in " ".join(again.stdout.split())
    # nothing renewed: each host is rolled once (the last play), not twice
    roll = "TASK [flashmm_files : Write the FlashMM files of this host]"
    assert again.stdout.count(roll) == len(HOSTS)
    assert first.stdout.count(roll) == 2 * len(HOSTS)

    # a rotation that failed midway is resumed by the next run without an id
    env_file = site.sandbox / HOSTS[1] / ".env"
    saved = env_file.read_bytes()
    env_file.unlink()
    env_file.mkdir()
    try:
        failed = site.rotate("generated")
    finally:
        env_file.rmdir()
        env_file.write_bytes(saved)
        env_file.chmod(0o600)
    assert failed.returncode != 0
    mid = site.vault()
    id3 = mid["flashmm_rotations"]["generated"]["id"]
    assert mid["flashmm_rotations"]["generated"]["state"] == "rolling" and id3 not in (id1, id2)
    resumed = ok(site.rotate("generated"))
    assert f"generated: resuming rotation {id3}" in " ".join(resumed.stdout.split())
    end = site.vault()
    assert end["flashmm_rotations"]["generated"] == {"id": id3, "state": "done"}
    assert end["flashmm_secrets"]["secret_key"] == mid["flashmm_secrets"]["secret_key"]
    for host in HOSTS:
        assert site.env_of(host)["SECRET_KEY"] == end["flashmm_secrets"]["secret_key"]

