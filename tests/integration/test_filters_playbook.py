"""The filter plugins driven through real ``ansible-playbook`` runs on copies of
inventories/local, with small playbooks that call the filters directly."""

from __future__ import annotations

import json
import secrets as random_tokens
import textwrap
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from support import ansible_playbook, copy_inventory, recap, tool_env

pytestmark = pytest.mark.integration

HOSTS = ("local-1", "local-2", "local-3")
SECRETS = {"secret_key": random_tokens.token_urlsafe(36),          # 48 url-safe characters
           "api_auth_token": random_tokens.token_urlsafe(30),      # 40
           "encryption_key": Fernet.generate_key().decode("ascii")}
assert len(SECRETS["secret_key"]) == 48 and len(SECRETS["api_auth_token"]) == 40

FILTERS_PLAYBOOK = """\
- name: Drive the flashmm filters
  hosts: all
  gather_facts: false
  tasks:
    - name: Validate every host once
      ansible.builtin.set_fact:
        validated: "{{ hostvars | flashmm_validate(ansible_play_hosts_all) }}"
      run_once: true

    - name: Explain and runtime keys per host
      ansible.builtin.set_fact:
        explain_db: "{{ hostvars | flashmm_explain(inventory_hostname, 'storage.redis.db') }}"
        explain_position: >-
          {{ hostvars | flashmm_explain(inventory_hostname, 'trading.max_position_usdc') }}
        explain_secret: "{{ hostvars | flashmm_explain(inventory_hostname, 'secrets.secret_key') }}"
        runtime_keys: "{{ hostvars | flashmm_runtime_keys(inventory_hostname) }}"

    - name: The .env variables, secrets in clear
      ansible.builtin.set_fact:
        env_vars: "{{ hostvars | flashmm_env(inventory_hostname) }}"
      no_log: true

    - name: Write the non-secret results
      ansible.builtin.copy:
        content: >-
          {{ {'validated': validated, 'explain_db': explain_db,
              'explain_position': explain_position, 'explain_secret': explain_secret,
              'runtime_keys': runtime_keys} | to_json }}
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        mode: "0600"

    - name: Write the env variables
      ansible.builtin.copy:
        content: "{{ env_vars | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}.env.json"
        mode: "0600"
      no_log: true
"""


def write_playbook(tmp_path: Path, text: str, name: str = "filters.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def local_with_vault(dest: Path) -> Path:
    inv = copy_inventory("local", dest)
    (inv / "group_vars" / "all" / "vault.yml").write_text(
        yaml.safe_dump({"flashmm_secrets": SECRETS}), encoding="utf-8")
    return inv


def play(playbook: Path, inv: Path, out: Path, sandbox: Path, *args: str):
    out.mkdir(parents=True, exist_ok=True)
    return ansible_playbook(str(playbook), inv, "-e", f"out={out}", *args,
                            env=tool_env(FLASHMM_SANDBOX=str(sandbox)))


def results(out: Path, suffix: str = ".json") -> dict[str, dict]:
    return {h: json.loads((out / f"{h}{suffix}").read_text(encoding="utf-8")) for h in HOSTS}


@pytest.fixture(scope="module")
def filters_run(tmp_path_factory):
    """One -vvv run of the filters playbook on a local copy with a vault."""
    tmp = tmp_path_factory.mktemp("filters")
    inv = local_with_vault(tmp)
    out = tmp / "out"
    proc = play(write_playbook(tmp, FILTERS_PLAYBOOK), inv, out, tmp / "sandbox", "-vvv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return inv, out, proc


def test_validate_filter_returns_each_hosts_effective_config(filters_run):
    _, out, proc = filters_run
    assert all(counts["failed"] == 0 for counts in recap(proc.stdout).values())
    for n, host in enumerate(HOSTS, start=1):
        validated = results(out)[host]["validated"]
        assert sorted(validated) == list(HOSTS)        # every host's config, on every host
        redis = validated[host]["storage"]["redis"]
        assert redis["db"] == n
        assert redis["url"] == f"redis://127.0.0.1:6379/{n}"
        assert validated[host]["app"]["environment"] == "local"


def test_validate_filter_redacts_secrets(filters_run):
    _, out, _ = filters_run
    secrets = results(out)["local-1"]["validated"]["local-2"]["secrets"]
    assert {k: secrets[k] for k in SECRETS} == {k: "<redacted>" for k in SECRETS}
    assert secrets["redis_password"] is None               # unset stays unset
    text = (out / "local-1.json").read_text(encoding="utf-8")
    assert all(value not in text for value in SECRETS.values())


def test_explain_filter_names_the_host_layer_for_the_redis_db(filters_run):
    inv, out, _ = filters_run
    for n, host in enumerate(HOSTS, start=1):
        info = results(out)[host]["explain_db"]
        assert info["value"] == n and info["layer"] == "host"
        assert info["source"].endswith(f"local/host_vars/{host}.yml")
        assert [s["layer"] for s in info["shadowed"]] == ["defaults", "environment"]
        secret = results(out)[host]["explain_secret"]
        assert secret["value"] == "<redacted>" and secret["layer"] == "vault"


def test_runtime_keys_filter_gives_the_four_keys_as_json(filters_run):
    _, out, _ = filters_run
    keys = results(out)["local-2"]["runtime_keys"]
    assert set(keys) == {"flashmm:config:trading:max_position_usdc",
                         "flashmm:config:trading:quote_frequency_hz",
                         "flashmm:config:ml:confidence_threshold",
                         "flashmm:config:monitoring:alert_enabled"}
    assert all(isinstance(v, str) for v in keys.values())
    assert {k: json.loads(v) for k, v in keys.items()} == {
        "flashmm:config:trading:max_position_usdc": 100.0,
        "flashmm:config:trading:quote_frequency_hz": 1.0,
        "flashmm:config:ml:confidence_threshold": 0.6,
        "flashmm:config:monitoring:alert_enabled": True}


def test_env_filter_carries_secrets_to_files_but_not_to_output(filters_run):
    _, out, proc = filters_run
    output = proc.stdout + proc.stderr
    for value in SECRETS.values():
        assert value not in output
    for n, host in enumerate(HOSTS, start=1):
        env = results(out, ".env.json")[host]
        assert env["SECRET_KEY"] == SECRETS["secret_key"]
        assert env["API_AUTH_TOKEN"] == SECRETS["api_auth_token"]
        assert env["ENCRYPTION_KEY"] == SECRETS["encryption_key"]
        assert env["REDIS_URL"] == f"redis://127.0.0.1:6379/{n}"
        assert env["TRADING_MAX_POSITION_USDC"] == "100.0"
        assert env["ENVIRONMENT"] == "local"


EXTRA_VARS = json.dumps({"flashmm_env_overrides": {"TRADING_MAX_POSITION_USDC": "250.5"}})


def test_extra_vars_env_override_wins_with_its_source(tmp_path):
    inv = local_with_vault(tmp_path)
    out = tmp_path / "out"
    proc = play(write_playbook(tmp_path, FILTERS_PLAYBOOK), inv, out, tmp_path / "sb",
                "-e", EXTRA_VARS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in HOSTS:
        data = results(out)[host]
        info = data["explain_position"]
        assert info["value"] == 250.5
        assert info["layer"] == "env"
        assert info["source"] == "extra vars (-e) or play vars"
        assert info["shadowed"][-1]["layer"] == "environment"
        assert data["validated"][host]["trading"]["max_position_usdc"] == 250.5
        assert json.loads(data["runtime_keys"]["flashmm:config:trading:max_position_usdc"]) == 250.5
        assert results(out, ".env.json")[host]["TRADING_MAX_POSITION_USDC"] == "250.5"


def test_extra_vars_env_override_is_not_attributed_to_the_inventory_file_it_replaced(tmp_path):
    """-e replaces the host's own flashmm_env_overrides: the value shown came from -e, so the
    source must say so, not name the host_vars file whose value (300) was discarded."""
    inv = local_with_vault(tmp_path)
    host_file = inv / "host_vars" / "local-1.yml"
    data = yaml.safe_load(host_file.read_text(encoding="utf-8"))
    data["flashmm_env_overrides"] = {"TRADING_MAX_POSITION_USDC": "300"}
    host_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "out"
    proc = play(write_playbook(tmp_path, FILTERS_PLAYBOOK), inv, out, tmp_path / "sb",
                "-e", EXTRA_VARS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = results(out)["local-1"]["explain_position"]
    assert info["value"] == 250.5
    assert info["source"] == "extra vars (-e) or play vars", info


def test_invalid_inventory_fails_the_task_with_path_and_file(tmp_path):
    inv = local_with_vault(tmp_path)
    host_file = inv / "host_vars" / "local-3.yml"
    host_file.write_text(yaml.safe_dump({"flashmm_host_config": {
        "storage": {"redis": {"db": -1}}, "trading": {"quote_frequency_hz": 25}}}),
        encoding="utf-8")
    out = tmp_path / "out"
    proc = play(write_playbook(tmp_path, FILTERS_PLAYBOOK), inv, out, tmp_path / "sb")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "storage.redis.db" in output and "trading.quote_frequency_hz" in output
    assert str(host_file) in output
    assert "layer 'host'" in output
    assert sum(c["failed"] for c in recap(proc.stdout).values()) >= 1
    assert list(out.iterdir()) == []                   # nothing after validation ran


def test_env_filter_refuses_missing_secrets_and_explain_refuses_unknown_keys(tmp_path):
    inv = copy_inventory("local", tmp_path)
    # no vault: secrets missing (a machine may hold a generated, git-ignored one)
    (inv / "group_vars" / "all" / "vault.yml").unlink(missing_ok=True)
    playbook = write_playbook(tmp_path, """\
        - name: Filters that must fail
          hosts: local-1
          gather_facts: false
          tasks:
            - name: Explain a misspelt key
              ansible.builtin.debug:
                msg: "{{ hostvars | flashmm_explain(inventory_hostname, 'trading.max_postion_usdc') }}"
              ignore_errors: true
            - name: The env needs every secret
              ansible.builtin.set_fact:
                env_vars: "{{ hostvars | flashmm_env(inventory_hostname) }}"
              no_log: true
        """)
    proc = play(playbook, inv, tmp_path / "out", tmp_path / "sb")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "did you mean trading.max_position_usdc" in output
    counts = recap(proc.stdout)["local-1"]
    assert counts["failed"] == 1 and counts["ignored"] == 1
