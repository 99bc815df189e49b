"""The kept module payloads (callback flashmm_module_cache) in real ansible-playbook runs: a
second run loads what the first built, changed module_utils are built again, a damaged entry
is replaced, and FLASHMM_MODULE_CACHE=off leaves Ansible as it is."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support import ROOT, ansible_playbook, tool_env

pytestmark = pytest.mark.integration

# Ansible's own debug lines (ANSIBLE_DEBUG=1) say whether a payload was built or loaded
BUILT = "ANSIBALLZ: Creating module"
LOADED = re.compile(r"ANSIBALLZ: using cached module: \S+/ansiballz_cache/(\S+)")
USED = re.compile(r"flashmm_module_cache: module payloads in (\S+)")

PLAYBOOK = """\
- name: Two modules, one of this project
  hosts: localhost
  gather_facts: false
  tasks:
    - name: A builtin module
      ansible.builtin.ping:
    - name: A module of this project (library/), with module_utils of its own
      flashmm_audit:
        root: "{{ audit_root }}"
"""


@pytest.fixture
def play(tmp_path):
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    (tmp_path / "root").mkdir()
    return playbook


def playbook_run(play: Path, store: Path | str, **env: str):
    proc = ansible_playbook(str(play), "localhost,", "-c", "local",
                            "-e", f"audit_root={play.parent / 'root'}",
                            "-e", "ansible_python_interpreter=/usr/bin/python3", "-vvv",
                            env=tool_env(FLASHMM_MODULE_CACHE=str(store), ANSIBLE_DEBUG="1", **env))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_a_second_run_loads_the_payloads_the_first_built(play, tmp_path):
    store = tmp_path / "store"
    first = playbook_run(play, store)
    assert first.count(BUILT) == 2 and not LOADED.search(first)
    [where] = set(USED.findall(first))
    entries = sorted(p.name for p in Path(where).iterdir() if not p.name.endswith(".lock"))
    assert entries == ["ansible.legacy.flashmm_audit-ZIP_DEFLATED-none",
                       "ansible.modules.ping-ZIP_DEFLATED-none"]

    second = playbook_run(play, store)
    assert BUILT not in second
    assert sorted(LOADED.findall(second)) == entries
    assert set(USED.findall(second)) == {where}


def test_two_runs_at_once_on_an_empty_store_share_it_whole(play, tmp_path):
    # Ansible's own lock and rename inside the fingerprint's directory: one builds, or both
    # build and one rename wins; neither fails, and nothing half-written stays
    store = tmp_path / "store"
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(lambda _: playbook_run(play, store), range(2)))
    [where] = {w for out in outputs for w in USED.findall(out)}
    names = sorted(p.name for p in Path(where).iterdir() if not p.name.endswith(".lock"))
    assert names == ["ansible.legacy.flashmm_audit-ZIP_DEFLATED-none",
                     "ansible.modules.ping-ZIP_DEFLATED-none"]
    again = playbook_run(play, store)
    assert BUILT not in again and len(LOADED.findall(again)) == 2


def test_changed_module_utils_are_built_again_under_another_fingerprint(play, tmp_path):
    store, extra = tmp_path / "store", tmp_path / "extra_utils"
    extra.mkdir()
    (extra / "flashmm_unused.py").write_text("VERSION = 1\n")
    utils = {"ANSIBLE_MODULE_UTILS": f"{ROOT / 'module_utils'}:{extra}"}
    first = playbook_run(play, store, **utils)
    (extra / "flashmm_unused.py").write_text("VERSION = 2\n")
    second = playbook_run(play, store, **utils)
    assert second.count(BUILT) == 2 and not LOADED.search(second)
    assert set(USED.findall(first)) != set(USED.findall(second))
    assert len(list(store.iterdir())) == 2


def test_a_damaged_payload_is_built_again_instead_of_failing_the_run(play, tmp_path):
    store = tmp_path / "store"
    [where] = set(USED.findall(playbook_run(play, store)))
    damaged = Path(where) / "ansible.legacy.flashmm_audit-ZIP_DEFLATED-none"
    damaged.write_bytes(b"\x80\x04 not a payload")
    again = playbook_run(play, store)
    assert again.count(BUILT) == 1
    assert LOADED.findall(again) == ["ansible.modules.ping-ZIP_DEFLATED-none"]
    assert damaged.read_bytes() != b"\x80\x04 not a payload"


def test_what_a_killed_build_leaves_does_not_stop_the_next_run(play, tmp_path):
    # kill -9 inside Ansible's build leaves its "-part" file and its (unlocked) lock file
    store = tmp_path / "store"
    [where] = set(USED.findall(playbook_run(play, store)))
    payload = Path(where) / "ansible.legacy.flashmm_audit-ZIP_DEFLATED-none"
    payload.unlink()
    Path(f"{payload}-part").write_bytes(b"\x80\x04 half a payload")
    again = playbook_run(play, store)
    assert again.count(BUILT) == 1
    assert payload.is_file() and not Path(f"{payload}-part").exists()
    assert BUILT not in playbook_run(play, store)


def test_off_keeps_nothing(play, tmp_path):
    out = playbook_run(play, "off")
    assert "flashmm_module_cache: off (FLASHMM_MODULE_CACHE)" in out
    assert out.count(BUILT) == 2 and not USED.search(out)
    assert not (tmp_path / "off").exists()
