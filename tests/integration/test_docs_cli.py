"""flashmm-config docs and docs --check as processes: stale, missing and removed generated files."""

from __future__ import annotations

import shutil

import pytest

from support import ROOT, flashmm_config
from unit.test_docs_fresh import GENERATED, snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def stale_root(tmp_path):
    root = tmp_path / "project"
    for rel in GENERATED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, root / rel)
    return root


def test_docs_check_passes_on_the_repository():
    proc = flashmm_config("docs", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout


def test_docs_check_fails_on_a_stale_file_and_writes_nothing(stale_root):
    env_example = stale_root / ".env.example"
    env_example.write_text(env_example.read_text(encoding="utf-8").replace(
        "TRADING_MAX_POSITION_USDC=", "TRADING_MAX_POSITION_USDC=9"), encoding="utf-8")
    before = snapshot(stale_root)
    proc = flashmm_config("docs", "--check", "--root", str(stale_root))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert ".env.example" in proc.stderr
    assert "docs/configuration.md" not in proc.stderr       # that one is fresh
    assert snapshot(stale_root) == before


def test_docs_check_fails_on_missing_files_and_creates_nothing(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    proc = flashmm_config("docs", "--check", "--root", str(root))
    assert proc.returncode == 1
    assert ".env.example" in proc.stderr and "docs/configuration.md" in proc.stderr
    assert list(root.iterdir()) == []


def test_docs_check_fails_on_a_removed_section(stale_root):
    md = stale_root / "docs" / "configuration.md"
    text = md.read_text(encoding="utf-8")
    md.write_text(text[: text.index("## `sei`")], encoding="utf-8")
    before = snapshot(stale_root)
    proc = flashmm_config("docs", "--check", "--root", str(stale_root))
    assert proc.returncode == 1 and "docs/configuration.md" in proc.stderr
    assert snapshot(stale_root) == before


def test_docs_rewrites_stale_files_then_check_passes(stale_root):
    (stale_root / "docs" / "configuration.md").unlink()
    (stale_root / ".env.example").write_text("OLD=1\n", encoding="utf-8")
    proc = flashmm_config("docs", "--root", str(stale_root))
    assert proc.returncode == 0, proc.stderr
    for rel in GENERATED:
        assert (stale_root / rel).read_bytes() == (ROOT / rel).read_bytes()
    again = flashmm_config("docs", "--check", "--root", str(stale_root))
    assert again.returncode == 0 and "up to date" in again.stdout


def test_docs_refuses_a_readme_without_its_section_markers_and_check_calls_it_stale(stale_root):
    readme = stale_root / "README.md"
    readme.write_text("# a README someone rewrote\n", encoding="utf-8")
    before = snapshot(stale_root)
    check = flashmm_config("docs", "--check", "--root", str(stale_root))
    assert check.returncode == 1 and "README.md" in check.stderr
    proc = flashmm_config("docs", "--root", str(stale_root))
    assert proc.returncode == 2 and "README.md" in proc.stderr
    assert "markers of the generated section 'restart-keys' are missing" in proc.stderr
    assert snapshot(stale_root) == before
