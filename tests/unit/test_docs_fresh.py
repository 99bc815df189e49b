"""Generated files (``.env.example``, ``docs/configuration.md``) are derived from the schema and
kept fresh: ``flashmm-config docs --check`` fails on stale copies and writes nothing."""

from __future__ import annotations

import re

import pytest
from pathlib import Path


from flashmm_deploy.config import docs
from flashmm_deploy.config.schema import FIELDS, FIELDS_BY_ENV
from support import ROOT

GENERATED = (".env.example", "docs/configuration.md", "src/flashmm_config/fields.json", "README.md")
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$", re.M)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_files_equal_what_the_schema_generates():
    assert (ROOT / ".env.example").read_text(encoding="utf-8") == docs.env_example()
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == \
        docs.configuration_md()


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
    from flashmm_deploy.config import env_strings

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


def test_readme_lists_the_restart_free_keys_from_the_schema():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert docs.GENERATED["README.md"](readme) == readme
    section = readme.split("<!-- begin generated: restart-keys -->")[1].split("<!-- end")[0]
    listed = re.findall(r"^- `([a-z_.]+)`", section, re.M)
    assert listed == [spec.path for spec in FIELDS.values() if spec.runtime]


def test_a_generated_section_is_spliced_between_its_markers_and_missing_markers_are_named():
    splice = docs.GENERATED["README.md"]
    text = ("intro\n<!-- begin generated: restart-keys -->\nSTALE-TEXT\n"
            "<!-- end generated: restart-keys -->\noutro\n")
    out = splice(text)
    assert out.startswith("intro\n<!-- begin") and out.endswith("restart-keys -->\noutro\n")
    assert "STALE-TEXT" not in out and "`trading.quote_frequency_hz`" in out
    assert splice(out) == out
    with pytest.raises(docs.SectionMissing, match="'restart-keys' are missing"):
        splice("a README without markers\n")
