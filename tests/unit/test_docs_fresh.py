"""Generated files (``.env.example``, ``docs/configuration.md``) are derived from the schema and
kept fresh: ``flashmm-config docs --check`` fails on stale copies and writes nothing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from flashmm_deploy import docs
from flashmm_deploy.schema import FIELDS, FIELDS_BY_ENV
from support import ROOT, flashmm_config

GENERATED = (".env.example", "docs/configuration.md")
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$", re.M)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_docs_check_passes_on_the_repository():
    proc = flashmm_config("docs", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout


def test_committed_files_equal_what_the_schema_generates():
    assert (ROOT / ".env.example").read_text(encoding="utf-8") == docs.env_example()
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == \
        docs.configuration_md()


@pytest.fixture
def stale_root(tmp_path):
    root = tmp_path / "project"
    for rel in GENERATED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, root / rel)
    return root


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


def test_env_example_lists_every_schema_env_var_once():
    for text in (docs.env_example(), (ROOT / ".env.example").read_text(encoding="utf-8")):
        names = [m.group(1) for m in ASSIGNMENT.finditer(text)]
        assert sorted(names) == sorted(FIELDS_BY_ENV)
        assert len(names) == len(set(names))


def test_env_example_holds_no_secret_value():
    values = dict(ASSIGNMENT.findall(docs.env_example()))
    for spec in FIELDS.values():
        if spec.secret or spec.required:
            assert values[spec.env] == "", spec.env


def test_env_example_defaults_parse_back_to_the_schema_defaults():
    from flashmm_deploy import env_strings

    values = dict(ASSIGNMENT.findall(docs.env_example()))
    for spec in FIELDS.values():
        if not (spec.secret or spec.required or spec.default is None):
            assert env_strings.parse(spec, values[spec.env]) == spec.default, spec.env


def test_reference_doc_names_every_key_and_env_var():
    md = docs.configuration_md()
    for spec in FIELDS.values():
        assert f"`{spec.env}`" in md
        assert f"`{spec.key}`" in md
    for spec in FIELDS.values():
        if spec.runtime:
            assert spec.redis_key in md
