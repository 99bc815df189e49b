"""flashmm_deploy.hostside.filesync: the one-call file writer behind library/flashmm_files.py."""

from __future__ import annotations

import os

import pytest

from flashmm_deploy.hostside.filesync import HostLock, SyncError, check_run, mask_env, read_state, sync

ENV = "A='1'\nTOKEN='s3cret-old'\nZ='z'\n"


def spec(path, content, mode=0o644, **kw):
    return dict(path=path, content=content, mode=mode, **kw)


def test_first_sync_creates_files_and_directories_with_the_stated_modes(tmp_path):
    root = tmp_path / "root"
    result = sync(str(root), [spec("config/environments/local.yml", "a: 1\n"),
                              spec(".env", ENV, 0o600)])
    assert result["changed"] and result["files"] == {".env": "created",
                                                     "config/environments/local.yml": "created"}
    assert (root / ".env").stat().st_mode & 0o777 == 0o600
    assert (root / "config/environments/local.yml").read_text() == "a: 1\n"
    assert (root / "config").stat().st_mode & 0o777 == 0o755


def test_second_sync_with_the_same_input_changes_nothing(tmp_path):
    files = [spec("a.yml", "x\n"), spec(".env", ENV, 0o600)]
    sync(str(tmp_path), files)
    mtime = (tmp_path / "a.yml").stat().st_mtime_ns
    result = sync(str(tmp_path), files)
    assert not result["changed"] and result["diff"] == []
    assert (tmp_path / "a.yml").stat().st_mtime_ns == mtime


def test_a_mode_drift_is_repaired_without_rewriting(tmp_path):
    sync(str(tmp_path), [spec(".env", ENV, 0o600)])
    os.chmod(tmp_path / ".env", 0o644)
    result = sync(str(tmp_path), [spec(".env", ENV, 0o600)])
    assert result["files"] == {".env": "mode"}
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600


def test_check_mode_reports_but_writes_nothing(tmp_path):
    root = tmp_path / "root"
    result = sync(str(root), [spec("sub/a.yml", "x\n")], check=True)
    assert result["changed_files"] == ["sub/a.yml"]
    assert str(root / "sub") in result["created_directories"]
    assert not root.exists()


def test_diff_of_a_secret_file_masks_values_and_says_which_changed(tmp_path):
    sync(str(tmp_path), [spec(".env", ENV, 0o600, mask_keys=["TOKEN"])])
    new = ENV.replace("s3cret-old", "s3cret-new").replace("Z='z'", "Z='y'")
    diff = sync(str(tmp_path), [spec(".env", new, 0o600, mask_keys=["TOKEN"])])["diff"][0]
    assert "s3cret" not in diff["before"] + diff["after"]
    assert "TOKEN='<redacted>'" in diff["before"]
    assert "TOKEN='<redacted, changed>'" in diff["after"]
    assert "Z='y'" in diff["after"]               # non-secret values stay readable


def test_mask_marks_unchanged_secrets_plainly():
    assert mask_env(ENV, ["TOKEN"], ENV) == "A='1'\nTOKEN='<redacted>'\nZ='z'\n"


def test_no_temporary_file_is_left_behind(tmp_path):
    sync(str(tmp_path), [spec("a.yml", "x\n")])
    sync(str(tmp_path), [spec("a.yml", "y\n")])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".flashmm", "a.yml"]
    assert sorted(p.name for p in (tmp_path / ".flashmm").iterdir()) == ["lock", "state.json"]


@pytest.mark.parametrize("path", ["../escape.yml", "/etc/passwd", "a/../../b"])
def test_paths_outside_the_root_are_refused(tmp_path, path):
    with pytest.raises(SyncError, match="relative path inside"):
        sync(str(tmp_path / "root"), [spec(path, "x")])
    assert not (tmp_path / "escape.yml").exists()


def test_a_directory_in_place_of_a_file_is_refused(tmp_path):
    (tmp_path / "a.yml").mkdir()
    with pytest.raises(SyncError, match="not a regular file"):
        sync(str(tmp_path), [spec("a.yml", "x")])


def test_a_hand_edited_env_file_leaks_nothing_into_the_diff(tmp_path):
    """Whatever an operator left in the old .env (export, spaces, commented-out or multi-line
    values, keys deploy does not manage, stray lines) shows only as redacted in the diff."""
    (tmp_path / ".env").write_text(
        "# TOKEN=commented-out-token\n"
        "export TOKEN = 'exported-token'\n"
        'PASSWORD="multi\nline-password\nend"\n'
        "MY_OWN_API_KEY=operator-added-key\n"
        "a stray line with stray-secret\n"
        "A='1'\n")
    new = "A='2'\nTOKEN='fresh-token'\nPASSWORD='fresh-password'\n"
    diff = sync(str(tmp_path), [spec(".env", new, 0o600, mask_keys=["TOKEN", "PASSWORD"])])["diff"][0]
    shown = diff["before"] + diff["after"]
    for leaked in ("commented-out-token", "exported-token", "multi", "line-password", "end\n",
                   "operator-added-key", "stray-secret", "fresh-token", "fresh-password"):
        assert leaked not in shown, leaked
    assert "A='1'" in diff["before"] and "A='2'" in diff["after"]      # non-secrets readable
    assert "MY_OWN_API_KEY='<redacted>'" in diff["before"]
    assert "TOKEN='<redacted, changed>'" in diff["after"]


# ---- nothing half-written ----------------------------------------------------------------------

def tree(root):
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
            for p in sorted(root.rglob("*")) if p.is_file() and ".flashmm" not in p.parts}


@pytest.mark.parametrize("setup,needle", [
    (lambda r: (r / "config").write_text("a file where a directory goes"), "is not a directory"),
    (lambda r: (r / ".env").mkdir(), "is not a regular file"),
    (lambda r: (r / ".env").symlink_to("/etc/hostname"), "symbolic link"),
    (lambda r: (r / "config").symlink_to("/tmp"), "resolves outside"),
])
def test_a_bad_path_is_refused_before_anything_is_written(tmp_path, setup, needle):
    root = tmp_path / "root"
    sync(str(root), [spec("a.yml", "old\n")])
    setup(root)
    before = tree(root)
    with pytest.raises(SyncError, match=needle):
        sync(str(root), [spec("a.yml", "new\n"), spec(".env", "A='1'\n", 0o600),
                         spec("config/environments/x.yml", "b\n")])
    assert tree(root) == before


def test_a_failure_after_writing_puts_every_file_back(tmp_path):
    root = tmp_path / "root"
    sync(str(root), [spec("a.yml", "old\n"), spec(".env", "A='old'\n", 0o600)])
    before = tree(root)

    def seed_fails():
        raise RuntimeError("redis said no")

    with pytest.raises(RuntimeError):
        sync(str(root), [spec("a.yml", "new\n"), spec(".env", "A='new'\n", 0o600),
                         spec("b/new.yml", "created\n")], after_write=seed_fails)
    assert tree(root) == before
    assert not (root / "b" / "new.yml").exists()


def test_files_the_last_run_wrote_and_this_one_does_not_are_removed(tmp_path):
    sync(str(tmp_path), [spec("config/environments/testnet.yml", "a\n"), spec("keep.yml", "k\n")])
    (tmp_path / "operator-notes.txt").write_text("not ours")
    result = sync(str(tmp_path), [spec("config/environments/production.yml", "a\n"),
                                  spec("keep.yml", "k\n")])
    assert result["removed_files"] == ["config/environments/testnet.yml"]
    assert result["files"]["config/environments/testnet.yml"] == "removed"
    assert not (tmp_path / "config/environments/testnet.yml").exists()
    assert (tmp_path / "operator-notes.txt").exists()            # never ours: left alone
    check = sync(str(tmp_path), [spec("keep.yml", "k\n")], check=True)
    assert check["removed_files"] == ["config/environments/production.yml"]
    assert (tmp_path / "config/environments/production.yml").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_a_secret_file_with_a_foreign_owner_is_given_back_to_the_deploying_user(tmp_path):
    sync(str(tmp_path), [spec(".env", ENV, 0o600)])
    os.chown(tmp_path / ".env", 4242, 4242)
    result = sync(str(tmp_path), [spec(".env", ENV, 0o600)])
    assert result["files"] == {".env": "owner"}
    st = (tmp_path / ".env").stat()
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


def test_a_hand_written_comment_in_a_secret_file_never_shows_in_the_diff(tmp_path):
    ours = "# Written by flashmm-deploy\nA='1'\nTOKEN='new'\n"
    (tmp_path / ".env").write_text("# old TOKEN was hunter2-CANARY\n#TOKEN=also-CANARY\n"
                                   "A='1'\n")
    diff = sync(str(tmp_path), [spec(".env", ours, 0o600, mask_keys=["TOKEN"])])["diff"][0]
    assert "CANARY" not in diff["before"] + diff["after"]
    assert "# Written by flashmm-deploy" in diff["after"]


# ---- one run at a time ---------------------------------------------------------------------------

def test_a_second_run_waits_for_the_lock_then_says_who_holds_it(tmp_path):
    with HostLock(str(tmp_path), "run-A", 0):
        with pytest.raises(SyncError) as err:
            sync(str(tmp_path), [spec("a.yml", "x\n")], run_id="run-B", lock_timeout=0.3)
    assert "is held by run run-A" in str(err.value) and "flashmm_lock_timeout" in str(err.value)
    assert not (tmp_path / "a.yml").exists()
    sync(str(tmp_path), [spec("a.yml", "x\n")], run_id="run-B", lock_timeout=0.3)


def test_the_seed_refuses_when_another_run_wrote_the_files_since(tmp_path):
    sync(str(tmp_path), [spec("a.yml", "x\n")], run_id="run-A", record_run=True)
    check_run(str(tmp_path), "run-A")
    sync(str(tmp_path), [spec("a.yml", "x\n")], run_id="run-B", record_run=True)
    assert read_state(str(tmp_path))["run_id"] == "run-B"
    with pytest.raises(SyncError, match="another deploy .run run-B"):
        check_run(str(tmp_path), "run-A")


def test_a_rerun_without_record_run_writes_no_bookkeeping(tmp_path):
    files = [spec("a.yml", "x\n")]
    sync(str(tmp_path), files, run_id="r1")
    mtime = (tmp_path / ".flashmm" / "state.json").stat().st_mtime_ns
    assert sync(str(tmp_path), files, run_id="r2")["changed"] is False
    assert (tmp_path / ".flashmm" / "state.json").stat().st_mtime_ns == mtime
