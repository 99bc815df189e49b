"""flashmm_deploy.plan.module_cache: the fingerprint that decides when a kept module payload may
be reused, and the link that keeps a run's payloads in the store."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from flashmm_deploy.plan import module_cache


@pytest.fixture
def roots(tmp_path):
    library, utils = tmp_path / "library", tmp_path / "module_utils"
    library.mkdir()
    utils.mkdir()
    (library / "flashmm_x.py").write_text("import ansible.module_utils.flashmm_y\n")
    (utils / "flashmm_y.py").write_text("VALUE = 1\n")
    return library, utils


def test_the_fingerprint_is_stable_and_independent_of_the_order_of_its_roots(roots):
    library, utils = roots
    assert module_cache.fingerprint([library, utils]) == module_cache.fingerprint([utils, library])
    assert len(module_cache.fingerprint([library])) == 32


@pytest.mark.parametrize("change", ["edit", "add", "rename", "remove", "extra"])
def test_any_change_of_the_code_gives_another_fingerprint(roots, change):
    library, utils = roots
    before = module_cache.fingerprint([library, utils], extra=["2.19.14"])
    extra = ["2.19.14"]
    if change == "edit":
        (utils / "flashmm_y.py").write_text("VALUE = 2\n")
    elif change == "add":
        (utils / "flashmm_z.py").write_text("")
    elif change == "rename":
        (utils / "flashmm_y.py").rename(utils / "flashmm_w.py")
    elif change == "remove":
        (library / "flashmm_x.py").unlink()
    else:
        extra = ["2.19.15"]
    assert module_cache.fingerprint([library, utils], extra=extra) != before


def test_a_linked_module_util_counts_by_its_content(roots, tmp_path):
    # module_utils/ of this project are symlinks into src/flashmm_deploy/
    library, utils = roots
    real = tmp_path / "real.py"
    real.write_text("A = 1\n")
    (utils / "flashmm_linked.py").symlink_to(real)
    before = module_cache.fingerprint([library, utils])
    real.write_text("A = 2\n")
    assert module_cache.fingerprint([library, utils]) != before


def test_a_directory_link_back_up_is_walked_once(roots):
    library, utils = roots
    before = module_cache.fingerprint([library, utils])
    (utils / "loop").symlink_to(utils, target_is_directory=True)
    assert module_cache.fingerprint([library, utils]) == before


def test_caches_and_other_files_do_not_count(roots):
    library, utils = roots
    before = module_cache.fingerprint([library, utils])
    (utils / "__pycache__").mkdir()
    (utils / "__pycache__" / "flashmm_y.cpython-311.pyc").write_bytes(b"\0")
    (utils / "README.md").write_text("notes\n")
    assert module_cache.fingerprint([library, utils]) == before


def test_a_collection_counts_by_its_manifest_or_else_by_its_python_files(tmp_path):
    installed = tmp_path / "installed" / "ansible_collections" / "community" / "docker"
    checkout = tmp_path / "checkout" / "ansible_collections" / "acme" / "tools"
    for collection in (installed, checkout):
        (collection / "plugins" / "modules").mkdir(parents=True)
        (collection / "plugins" / "modules" / "thing.py").write_text("X = 1\n")
    (installed / "MANIFEST.json").write_text('{"collection_info": {"version": "4.0.0"}}')

    def key():
        return module_cache.fingerprint([], [tmp_path / "installed", tmp_path / "checkout"])

    first = key()
    (installed / "MANIFEST.json").write_text('{"collection_info": {"version": "4.1.0"}}')
    second = key()
    assert second != first
    (checkout / "plugins" / "modules" / "thing.py").write_text("X = 2\n")
    assert key() != second


def test_attach_links_the_runs_cache_to_the_fingerprints_directory_private_to_the_owner(tmp_path):
    run_tmp, store = tmp_path / "ansible-local-1", tmp_path / "store"
    run_tmp.mkdir()
    target = module_cache.attach(run_tmp, store, "k1")
    link = run_tmp / module_cache.CACHE_NAME
    assert link.is_symlink() and link.resolve() == target.resolve() == (store / "k1").resolve()
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    # a second attach in the same run is a no-op
    assert module_cache.attach(run_tmp, store, "k1") == target


def test_attach_leaves_a_run_alone_whose_cache_already_holds_a_built_module(tmp_path):
    run_tmp = tmp_path / "ansible-local-1"
    (run_tmp / module_cache.CACHE_NAME).mkdir(parents=True)
    (run_tmp / module_cache.CACHE_NAME / "ansible.modules.ping-ZIP_DEFLATED-none").write_text("x")
    with pytest.raises(FileExistsError):
        module_cache.attach(run_tmp, tmp_path / "store", "k1")
    assert (run_tmp / module_cache.CACHE_NAME).is_dir()
    assert not (run_tmp / module_cache.CACHE_NAME).is_symlink()


def test_a_damaged_entry_is_removed_and_the_sound_ones_kept(tmp_path):
    run_tmp, store = tmp_path / "ansible-local-1", tmp_path / "store"
    run_tmp.mkdir()
    (store / "k1").mkdir(parents=True)
    for name, body in [("ansible.modules.ping-ZIP_DEFLATED-none", "good"),
                       ("ansible.legacy.flashmm_files-ZIP_DEFLATED-none", "damaged"),
                       ("ansible.modules.ping-ZIP_DEFLATED-none.lock", ""),
                       ("ansible.modules.copy-ZIP_DEFLATED-none-part", "a killed run's")]:
        (store / "k1" / name).write_text(body)
    checked = []

    def check(path):
        checked.append(path.name)
        if path.read_text() != "good":
            raise EOFError("Ran out of input")

    module_cache.attach(run_tmp, store, "k1", check=check)
    assert checked == ["ansible.legacy.flashmm_files-ZIP_DEFLATED-none",
                       "ansible.modules.ping-ZIP_DEFLATED-none"]
    assert sorted(p.name for p in (store / "k1").iterdir()) == [
        "ansible.modules.copy-ZIP_DEFLATED-none-part", "ansible.modules.ping-ZIP_DEFLATED-none",
        "ansible.modules.ping-ZIP_DEFLATED-none.lock"]


def test_prune_removes_fingerprints_unused_for_a_day_beyond_the_newest_few(tmp_path):
    store, now = tmp_path / "store", 1_800_000_000.0
    ages = {"fresh": 60, "recent": 3600, "old-1": 2 * 86400, "old-2": 3 * 86400,
            "old-3": 4 * 86400, "old-4": 5 * 86400, "current": 9 * 86400}
    names = {label: hashlib.sha256(label.encode()).hexdigest()[:32] for label in ages}
    for label, age in ages.items():
        (store / names[label]).mkdir(parents=True)
        os.utime(store / names[label], (now - age, now - age))
    removed = module_cache.prune(store, keep=names["current"], now=now)
    # the 4 most recently used stay whatever their age, and the current one; idle others go
    assert sorted(p.name for p in removed) == sorted([names["old-3"], names["old-4"]])
    assert sorted(p.name for p in store.iterdir()) == sorted(
        names[label] for label in ("current", "fresh", "old-1", "old-2", "recent"))


def test_prune_removes_nothing_but_fingerprints(tmp_path):
    # FLASHMM_MODULE_CACHE=/tmp must not cost /tmp its old directories, nor its mode
    store, now = tmp_path / "shared", 1_800_000_000.0
    store.mkdir()
    store.chmod(0o1777)
    for name in ["backups", "ABCDEF0123456789ABCDEF0123456789", "0" * 31, "0" * 33]:
        (store / name).mkdir()
        os.utime(store / name, (now - 90 * 86400, now - 90 * 86400))
    run_tmp = tmp_path / "ansible-local-1"
    run_tmp.mkdir()
    module_cache.attach(run_tmp, store, "f" * 32, now=now)
    assert sorted(p.name for p in store.iterdir()) == sorted(
        ["backups", "ABCDEF0123456789ABCDEF0123456789", "0" * 31, "0" * 33, "f" * 32])
    assert stat.S_IMODE(store.stat().st_mode) == 0o1777


def test_attach_marks_its_fingerprint_used(tmp_path):
    run_tmp, store, now = tmp_path / "ansible-local-1", tmp_path / "store", 1_800_000_000.0
    run_tmp.mkdir()
    (store / "k1").mkdir(parents=True)
    os.utime(store / "k1", (now - 30 * 86400, now - 30 * 86400))
    module_cache.attach(run_tmp, store, "k1", now=now)
    assert (store / "k1").stat().st_mtime == now


def test_attach_refuses_a_store_on_a_nearly_full_disk(tmp_path, monkeypatch):
    # a payload that cannot be written fails its task: better no store than a failed run
    run_tmp = tmp_path / "ansible-local-1"
    run_tmp.mkdir()
    monkeypatch.setattr(module_cache, "MIN_FREE_BYTES", 2 ** 62)
    with pytest.raises(OSError, match="MiB free"):
        module_cache.attach(run_tmp, tmp_path / "store", "k1")
    assert not (run_tmp / module_cache.CACHE_NAME).exists()


@pytest.mark.parametrize("how", ["group-writable", "a link"])
def test_a_fingerprint_directory_others_could_write_to_is_not_used(tmp_path, how):
    # Ansible unpickles the payloads: a directory planted in a shared store is refused
    run_tmp, store = tmp_path / "ansible-local-1", tmp_path / "store"
    run_tmp.mkdir()
    store.mkdir()
    if how == "a link":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        (store / ("a" * 32)).symlink_to(tmp_path / "elsewhere")
    else:
        (store / ("a" * 32)).mkdir()
        (store / ("a" * 32)).chmod(0o770)
    with pytest.raises(PermissionError, match="only it can write"):
        module_cache.attach(run_tmp, store, "a" * 32)
    assert not (run_tmp / module_cache.CACHE_NAME).exists()
