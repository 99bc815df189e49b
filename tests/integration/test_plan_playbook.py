"""The controller pass (role flashmm, action flashmm_plan) and the explain filter, driven through
real ``ansible-playbook`` runs on copies of the sandbox test inventory, with a small playbook
that writes what they produced to files."""

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

PLAN_PLAYBOOK = """\
- name: Plan, then write what the plan holds
  hosts: all
  gather_facts: false
  tasks:
    - name: Validate and render every host
      ansible.builtin.import_role:
        name: flashmm
        tasks_from: plan

    - name: Explain two keys per host
      ansible.builtin.set_fact:
        explain_db: "{{ hostvars | flashmm_explain(inventory_hostname, 'storage.redis.db') }}"
        explain_position: >-
          {{ hostvars | flashmm_explain(inventory_hostname, 'trading.max_position_usdc') }}
        explain_secret: "{{ hostvars | flashmm_explain(inventory_hostname, 'secrets.secret_key') }}"

    - name: Write this host's plan and explanations
      ansible.builtin.copy:
        content: >-
          {{ {'plan': flashmm_plan.hosts[inventory_hostname],
              'all_hosts': flashmm_plan.hosts | list,
              'explain_db': explain_db, 'explain_position': explain_position,
              'explain_secret': explain_secret} | to_json }}
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        mode: "0600"
"""


def write_playbook(tmp_path: Path, text: str, name: str = "plan.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def sandbox_with_vault(dest: Path) -> Path:
    inv = copy_inventory("sandbox", dest)
    (inv / "group_vars" / "all" / "vault.yml").write_text(
        yaml.safe_dump({"flashmm_secrets": SECRETS}), encoding="utf-8")
    return inv


def play(playbook: Path, inv: Path, out: Path, sandbox: Path, *args: str, **env):
    out.mkdir(parents=True, exist_ok=True)
    return ansible_playbook(str(playbook), inv, "-e", f"out={out}", *args,
                            env=tool_env(FLASHMM_SANDBOX=str(sandbox), **env))


def results(out: Path) -> dict[str, dict]:
    return {h: json.loads((out / f"{h}.json").read_text(encoding="utf-8")) for h in HOSTS}


def config_file(plan: dict) -> dict:
    """The environment config file the plan renders for a host, parsed."""
    [entry] = [f for f in plan["files"] if f["path"].startswith("config/environments/")]
    return yaml.safe_load(entry["content"])


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory):
    """One -vvv run of the plan playbook on a sandbox copy with a vault."""
    tmp = tmp_path_factory.mktemp("plan")
    inv = sandbox_with_vault(tmp)
    out = tmp / "out"
    proc = play(write_playbook(tmp, PLAN_PLAYBOOK), inv, out, tmp / "sandbox", "-vvv")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return inv, out, proc, tmp / "sandbox"


def test_plan_renders_each_hosts_files_from_its_own_layers(plan_run):
    _, out, proc, sandbox = plan_run
    assert all(counts["failed"] == 0 for counts in recap(proc.stdout).values())
    for n, host in enumerate(HOSTS, start=1):
        data = results(out)[host]
        assert sorted(data["all_hosts"]) == list(HOSTS)     # registered once for the play
        plan = data["plan"]
        assert plan["root"] == str(sandbox / host)
        assert sorted(f["path"] for f in plan["files"]) == [
            "config/environments/local.yml", "docker-compose.yml", "redis/seed.lua",
            "redis/users.acl"]
        cfg = config_file(plan)
        assert cfg["storage"]["redis"]["db"] == n
        assert cfg["storage"]["redis"]["url"] == f"redis://127.0.0.1:6379/{n}"
        assert "secrets" not in cfg
        assert plan["runtime"]["db"] == n and plan["runtime_with_files"] is True
        assert plan["env"]["public"]["REDIS_URL"] == f"redis://127.0.0.1:6379/{n}"


def test_the_plan_holds_no_secret_and_is_not_printed(plan_run):
    _, out, proc, _ = plan_run
    output = proc.stdout + proc.stderr
    assert "the output has been hidden" in output            # the plan task's result, at -vvv
    for value in SECRETS.values():
        assert value not in output
        for host in HOSTS:
            assert value not in (out / f"{host}.json").read_text(encoding="utf-8")


def test_explain_filter_names_the_host_layer_for_the_redis_db(plan_run):
    _, out, _, _ = plan_run
    for n, host in enumerate(HOSTS, start=1):
        info = results(out)[host]["explain_db"]
        assert info["value"] == n and info["layer"] == "host"
        assert info["source"].endswith(f"sandbox/host_vars/{host}.yml")
        assert [s["layer"] for s in info["shadowed"]] == ["defaults", "environment"]
        secret = results(out)[host]["explain_secret"]
        assert secret["value"] == "<redacted>" and secret["layer"] == "vault"


EXTRA_VARS = json.dumps({"flashmm_env_overrides": {"TRADING_MAX_POSITION_USDC": "250.5"}})


def test_extra_vars_env_override_wins_with_its_source(tmp_path):
    inv = sandbox_with_vault(tmp_path)
    out = tmp_path / "out"
    proc = play(write_playbook(tmp_path, PLAN_PLAYBOOK), inv, out, tmp_path / "sb",
                "-e", EXTRA_VARS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in HOSTS:
        data = results(out)[host]
        info = data["explain_position"]
        assert info["value"] == 250.5 and info["layer"] == "env"
        assert info["source"] == "extra vars (-e) or play vars"
        assert info["shadowed"][-1]["layer"] == "environment"
        assert config_file(data["plan"])["trading"]["max_position_usdc"] == 250.5
        # a runtime key: the config file and Redis carry it, .env does not (no restart)
        assert "TRADING_MAX_POSITION_USDC" not in data["plan"]["env"]["public"]
        assert "flashmm:config:trading:max_position_usdc\", \"250.5\"" in \
            next(f["content"] for f in data["plan"]["files"] if f["path"] == "redis/seed.lua")


def test_extra_vars_env_override_is_not_attributed_to_the_inventory_file_it_replaced(tmp_path):
    """-e replaces the host's own flashmm_env_overrides: the value shown came from -e, so the
    source must say so, not name the host_vars file whose value (300) was discarded."""
    inv = sandbox_with_vault(tmp_path)
    host_file = inv / "host_vars" / "local-1.yml"
    data = yaml.safe_load(host_file.read_text(encoding="utf-8"))
    data["flashmm_env_overrides"] = {"TRADING_MAX_POSITION_USDC": "300"}
    host_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    out = tmp_path / "out"
    proc = play(write_playbook(tmp_path, PLAN_PLAYBOOK), inv, out, tmp_path / "sb",
                "-e", EXTRA_VARS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = results(out)["local-1"]["explain_position"]
    assert info["value"] == 250.5
    assert info["source"] == "extra vars (-e) or play vars", info


def test_invalid_inventory_fails_the_plan_with_path_and_file_and_nothing_after_runs(tmp_path):
    inv = sandbox_with_vault(tmp_path)
    host_file = inv / "host_vars" / "local-3.yml"
    host_file.write_text(yaml.safe_dump({"flashmm_host_config": {
        "storage": {"redis": {"db": -1}}, "trading": {"quote_frequency_hz": 25}}}),
        encoding="utf-8")
    out = tmp_path / "out"
    proc = play(write_playbook(tmp_path, PLAN_PLAYBOOK), inv, out, tmp_path / "sb")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "storage.redis.db" in output and "trading.quote_frequency_hz" in output
    assert str(host_file) in output and "layer 'host'" in output
    assert sum(c["failed"] for c in recap(proc.stdout).values()) >= 1
    assert list(out.iterdir()) == []                   # nothing after validation ran


def test_a_bad_role_variable_fails_the_plan_naming_it_and_its_file(tmp_path):
    inv = sandbox_with_vault(tmp_path)
    (inv / "group_vars" / "flashmm.yml").write_text(yaml.safe_dump(
        {"flashmm_files_secret_mode": "0644", "flashmm_runtime_moed": "enforce"}))
    out = tmp_path / "out"
    proc = play(write_playbook(tmp_path, PLAN_PLAYBOOK), inv, out, tmp_path / "sb")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "flashmm_files_secret_mode: holds secrets" in output
    assert "flashmm_runtime_moed: unknown FlashMM variable" in output
    assert "did you mean flashmm_runtime_mode?" in output
    assert str(inv / "group_vars" / "flashmm.yml") in output
    assert list(out.iterdir()) == []


def test_explain_refuses_unknown_keys_with_a_did_you_mean(tmp_path):
    inv = sandbox_with_vault(tmp_path)
    playbook = write_playbook(tmp_path, """\
        - name: A filter that must fail
          hosts: local-1
          gather_facts: false
          tasks:
            - name: Explain a misspelt key
              ansible.builtin.debug:
                msg: "{{ hostvars | flashmm_explain(inventory_hostname, 'trading.max_postion_usdc') }}"
        """)
    proc = play(playbook, inv, tmp_path / "out", tmp_path / "sb")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "did you mean trading.max_position_usdc" in output
    assert recap(proc.stdout)["local-1"]["failed"] == 1


def test_validate_playbook_checks_what_deploy_checks_and_explains_with_e(tmp_path):
    inv = sandbox_with_vault(tmp_path)
    ok = ansible_playbook("playbooks/validate.yml", inv, "-e", EXTRA_VARS,
                          "-e", "flashmm_explain=trading.max_position_usdc",
                          env=tool_env(FLASHMM_SANDBOX=str(tmp_path / "sb")))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "value: 250.5" in ok.stdout and "layer: env" in ok.stdout
    (inv / "group_vars" / "flashmm.yml").write_text(yaml.safe_dump({"flashmm_root": "relative"}))
    bad = ansible_playbook("playbooks/validate.yml", inv,
                           env=tool_env(FLASHMM_SANDBOX=str(tmp_path / "sb")))
    assert bad.returncode == 2 and "flashmm_root: must be an absolute path" in bad.stdout + bad.stderr


TWO_PLANS_PLAYBOOK = """\
- name: Plan every host
  hosts: all
  gather_facts: false
  tasks:
    - name: Validate and render every host
      ansible.builtin.import_role:
        name: flashmm
        tasks_from: plan

- name: Plan again, one host at a time (as a rotation's roll does)
  hosts: all
  gather_facts: false
  serial: 1
  tasks:
    - name: Validate and render this batch
      ansible.builtin.import_role:
        name: flashmm
        tasks_from: plan

    - name: Write what this batch's plan holds
      ansible.builtin.copy:
        content: "{{ {'plan': flashmm_plan.hosts[inventory_hostname]} | to_json }}"
        dest: "{{ out }}/{{ inventory_hostname }}.json"
        mode: "0600"
"""
PRELOADED = "flashmm_plan_preload: the controller pass's modules are loaded"


def test_a_run_that_plans_again_loads_the_plans_modules_once_in_its_main_process(plan_run,
                                                                                  tmp_path):
    _, _, one_plan, _ = plan_run
    assert PRELOADED not in one_plan.stdout          # one plan (-vvv): left to its worker
    inv = sandbox_with_vault(tmp_path)
    out = tmp_path / "out"
    proc = play(write_playbook(tmp_path, TWO_PLANS_PLAYBOOK), inv, out, tmp_path / "sb", "-vvv")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.count(PRELOADED) == 1         # 4 plans: loaded at the second
    # at the second play's first plan, not before
    assert proc.stdout.index(PRELOADED) > proc.stdout.index("PLAY [Plan again, one host at a time")
    for host in HOSTS:                               # the later plans are whole
        plan = json.loads((out / f"{host}.json").read_text(encoding="utf-8"))["plan"]
        assert sorted(f["path"] for f in plan["files"]) == [
            "config/environments/local.yml", "docker-compose.yml", "redis/seed.lua",
            "redis/users.acl"]
