"""flashmm_deploy.filesync: the one-call file writer behind library/flashmm_files.py."""

from __future__ import annotations

import os

import pytest

from flashmm_deploy.filesync import SyncError, mask_env, sync

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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yml"]


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
