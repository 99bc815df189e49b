"""Generated files (``.env.example``, ``docs/configuration.md``) are derived from the schema and
kept fresh: ``flashmm-config docs --check`` fails on stale copies and writes nothing."""

from __future__ import annotations

import re
from pathlib import Path


from flashmm_deploy import docs
from flashmm_deploy.schema import FIELDS, FIELDS_BY_ENV
from support import ROOT

GENERATED = (".env.example", "docs/configuration.md")
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
