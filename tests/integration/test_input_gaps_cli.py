"""Input gaps of issue 15 (item 5), as an operator meets them: ``flashmm-config`` and
``ansible-playbook`` as processes on a copy of the sandbox inventory.

1. a dotted YAML key is refused (file, key, how to nest it), by validate and by deploy;
2. an invisible character in a value is refused by code point, a secret's value never shown;
3. validate refuses a templated ``flashmm_root`` that deploy refuses, with deploy's message;
4. ``secrets init --replace`` of an existing vault warns about the hosts and records on stderr
   and needs ``--yes`` or a typed confirmation;
5. an unknown variable is listed once per host; a refused secret is not also "required but not
   set"; ``docs --root`` of something that is no directory names it.
"""

from __future__ import annotations

import os
import pty
import re
import secrets as random_tokens
import subprocess
from pathlib import Path

import pytest
import yaml

from support import (ROOT, VENV_BIN, ansible_playbook, copy_inventory, flashmm_config, plain_vault,
                     tool_env)

pytestmark = pytest.mark.integration

ENV = Path("group_vars/all/flashmm.yml")
VAULT = Path("group_vars/all/vault.yml")
HOSTS = Path("hosts.yml")


@pytest.fixture
def inv(tmp_path) -> Path:
    """The sandbox inventory with its secrets generated (an encrypted vault, vault id local)."""
    inv = copy_inventory("sandbox", tmp_path)
    made = flashmm_config("secrets", "generate", str(inv))
    assert made.returncode == 0, made.stderr
    return inv


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    change(data)
    path.write_text("---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=False),
                    encoding="utf-8")


def flashmm_vars(data: dict) -> dict:
    return data["all"]["children"]["flashmm"]["vars"]


def problems(output: str) -> list[str]:
    """The '  - ...' problem lines of a format_issues report."""
    return [line.strip()[2:] for line in output.splitlines() if line.startswith("  - ")]


# ---- 1. a dotted key -----------------------------------------------------------------------------

def test_a_dotted_key_is_refused_by_validate_naming_file_key_and_nesting(inv):
    edit(inv / ENV, lambda d: d["flashmm_config"].__setitem__("trading.quote_frequency_hz", 3.0))
    proc = flashmm_config("validate", str(inv))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ("trading.quote_frequency_hz: 'trading.quote_frequency_hz' is a dotted key"
            in proc.stderr)
    assert "nest it, trading: {quote_frequency_hz: ...}" in proc.stderr
    assert f"from layer 'environment', {inv / ENV}" in proc.stderr


# ---- 2. invisible characters -----------------------------------------------------------------------

def test_a_zero_width_space_is_refused_by_code_point(inv):
    edit(inv / ENV, lambda d: d["flashmm_config"].setdefault("api", {}).__setitem__(
        "host", "0.0.0.0\u200b"))
    proc = flashmm_config("validate", str(inv))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert problems(proc.stderr) == ["api.host: holds U+200B (ZERO WIDTH SPACE), an invisible or "
                                     "control character: the value would not be what it looks "
                                     "like in the file; remove it"]
    assert str(inv / ENV) in proc.stderr


def test_an_invisible_character_in_a_secret_never_shows_the_secret(inv):
    plain_vault(inv)
    core = "S" + random_tokens.token_urlsafe(30)
    edit(inv / VAULT, lambda d: d["flashmm_secrets"].__setitem__("api_auth_token",
                                                                 core + "\ufeff"))
    proc = flashmm_config("validate", "--require-secrets", str(inv))
    assert proc.returncode == 1
    assert problems(proc.stderr) == ["secrets.api_auth_token: holds U+FEFF (ZERO WIDTH NO-BREAK "
                                     "SPACE), an invisible or control character: the value would "
                                     "not be what it looks like in the file; remove it (value "
                                     "hidden); .env variable API_AUTH_TOKEN"]
    assert core not in proc.stdout + proc.stderr and core[:10] not in proc.stdout + proc.stderr


# ---- 3. a templated flashmm_root: validate says what deploy says ---------------------------------------

@pytest.mark.parametrize("template, message", [
    ("relsandbox/{{ inventory_hostname }}", "must be an absolute path (got 'relsandbox/local-1')"),
    ("/tmp/flashmm/{{ inventory_hostname }}/..",
     "must be a normalised absolute path without '..', not / (got '/tmp/flashmm/local-1/..')"),
    ("$HOME/{{ inventory_hostname }}", "must be an absolute path (got '$HOME/local-1')"),
])
def test_validate_refuses_a_templated_root_with_deploys_message(inv, tmp_path, template, message):
    edit(inv / HOSTS, lambda d: d["all"]["children"]["flashmm"]["hosts"].__setitem__(
        "local-1", {"flashmm_root": template}))
    cli = flashmm_config("validate", str(inv))
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert problems(cli.stderr) == [f"flashmm_root: {message}"]
    assert f"from layer 'role variables', {inv / HOSTS}" in cli.stderr
    play = ansible_playbook("playbooks/validate.yml", inv,
                            env=tool_env(FLASHMM_SANDBOX=str(tmp_path / "sandbox")))
    assert play.returncode != 0
    assert f"flashmm_root: {message}" in play.stdout + play.stderr


def test_a_template_that_only_deploy_can_evaluate_stays_valid(inv):
    """The sandbox's own root, a lookup of $FLASHMM_SANDBOX, is left to deploy."""
    assert "lookup(" in flashmm_vars(yaml.safe_load((inv / HOSTS).read_text()))["flashmm_root"]
    proc = flashmm_config("validate", str(inv))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- 4. secrets init --replace -------------------------------------------------------------------------

REPLACE_WARNING = ("still run the old Redis password", "encrypted with the old encryption key",
                   "the next deploy will be refused", "playbooks/rotate_secrets.yml")


def secrets_init_replace(inv: Path, *extra: str, answer: str | None = None):
    """``secrets init --replace``; with ``answer``, stdin is a terminal that types it."""
    cmd = [str(VENV_BIN / "flashmm-config"), "secrets", "init", "--replace", *extra, str(inv)]
    if answer is None:
        return subprocess.run(cmd, cwd=ROOT, env=tool_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60)
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode() + b"\n")
        return subprocess.run(cmd, cwd=ROOT, env=tool_env(), stdin=follower,
                              capture_output=True, text=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)


def test_replace_of_a_live_vault_warns_and_needs_yes(inv):
    vault = inv / VAULT
    before = vault.read_bytes()
    proc = secrets_init_replace(inv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert vault.read_bytes() == before
    assert all(part in proc.stderr for part in REPLACE_WARNING), proc.stderr
    assert "not replaced, nothing changed (give --yes" in proc.stderr
    assert proc.stdout == ""

    proc = secrets_init_replace(inv, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert all(part in proc.stderr for part in REPLACE_WARNING)
    assert vault.read_bytes() != before
    assert "created; generated api_auth_token, encryption_key, secret_key" in proc.stdout


def test_replace_asks_at_a_terminal(inv):
    vault = inv / VAULT
    before = vault.read_bytes()
    proc = secrets_init_replace(inv, answer="no")
    assert proc.returncode == 2 and vault.read_bytes() == before
    assert "Type 'replace' to confirm" in proc.stderr
    proc = secrets_init_replace(inv, answer="replace")
    assert proc.returncode == 0, proc.stderr
    assert vault.read_bytes() != before and all(p in proc.stderr for p in REPLACE_WARNING)


def test_init_of_a_new_vault_asks_nothing(tmp_path):
    inv = copy_inventory("sandbox", tmp_path)
    proc = secrets_init_replace(inv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and (inv / VAULT).is_file()


def test_init_without_replace_points_a_live_environment_at_the_rotation(inv):
    proc = flashmm_config("secrets", "init", str(inv))
    assert proc.returncode == 2
    assert "a live one changes its secrets with playbooks/rotate_secrets.yml" in proc.stderr


# ---- 5. one line per problem, the path named -------------------------------------------------------------

def test_an_unknown_variable_names_each_host_once(inv):
    edit(inv / HOSTS, lambda d: flashmm_vars(d).__setitem__("flashmm_runtime_moed", "enforce"))
    proc = flashmm_config("validate", str(inv))
    assert proc.returncode == 1
    assert problems(proc.stderr) == ["flashmm_runtime_moed: unknown FlashMM variable: no role or "
                                     "layer uses it; did you mean flashmm_runtime_mode?"]
    assert re.findall(r"hosts: (.*)", proc.stderr) == ["local-1, local-2, local-3"]
    assert "1 problem(s) in 3 host(s)" in proc.stderr


@pytest.mark.parametrize("mark", ["{{ lookup('env', 'HOME') }}", "{% if x %}", "{# c"])
def test_a_refused_secret_is_one_problem_not_also_required_but_not_set(inv, mark):
    plain_vault(inv)
    core = "S" + random_tokens.token_urlsafe(40)
    edit(inv / VAULT, lambda d: d["flashmm_secrets"].__setitem__("secret_key", core + mark))
    for args in (["validate"], ["validate", "--require-secrets"]):
        proc = flashmm_config(*args, str(inv))
        assert proc.returncode == 1
        assert len(problems(proc.stderr)) == 1, proc.stderr
        assert problems(proc.stderr)[0].startswith("secrets.secret_key: holds ")
        assert "required but not set" not in proc.stderr
        assert core not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, said", [
    (["--root", "/dev/null"], "--root /dev/null: is not a directory"),
    (["--check", "--root", "/dev/null"], "--root /dev/null: is not a directory"),
    (["--root", "/nonexistent/flashmm"], "--root /nonexistent/flashmm: does not exist"),
])
def test_docs_with_a_root_that_is_no_directory_names_it(args, said):
    proc = flashmm_config("docs", *args)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"flashmm-config: error: {said}; it names the project root, "
                                   "where .env.example and docs/ are written")


def test_docs_names_the_file_it_cannot_write(tmp_path):
    (tmp_path / "docs").write_text("a file where docs/ should be\n")
    proc = flashmm_config("docs", "--root", str(tmp_path))
    assert proc.returncode == 2
    assert (f"{tmp_path / 'docs' / 'configuration.md'}: cannot write it (File exists: "
            f"{tmp_path / 'docs'})") in proc.stderr
    assert "internal error" not in proc.stderr
    again = flashmm_config("docs", "--root", str(tmp_path / "fresh"))
    assert again.returncode == 2 and "does not exist" in again.stderr
    (tmp_path / "fresh").mkdir()
    made = flashmm_config("docs", "--root", str(tmp_path / "fresh"))
    assert made.returncode == 0, made.stderr
    assert ((tmp_path / "fresh" / ".env.example").stat().st_mode & 0o777) == 0o644
    assert flashmm_config("docs", "--check", "--root", str(tmp_path / "fresh")).returncode == 0
