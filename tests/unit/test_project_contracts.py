"""Contracts between the project's parts that nothing else would catch: role defaults agree with
their argument specs, modules document exactly their options, the package depends on what it
imports, and the module_utils symlinks point into the package."""

from __future__ import annotations

import ast
import os
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from flashmm_deploy.plan import plan
from flashmm_deploy.hostside.seed_apply import RUNTIME_OPTIONS
from support import ROOT

ROLES = ROOT / "roles"


def spec_options(role: str) -> dict:
    data = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return data["argument_specs"]["main"]["options"]


@pytest.mark.parametrize("role", plan.ROLES)
def test_role_defaults_equal_their_argument_spec_defaults(role):
    """defaults/main.yml is what Ansible uses; the spec's defaults are what the controller pass
    applies for every host: they must be the same values, for the same variables."""
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    options = spec_options(role)
    assert set(defaults) == set(options)
    for name, option in options.items():
        assert defaults[name] == option.get("default"), name
        assert name.startswith(role + "_") or role == "flashmm", name
        assert option.get("description"), f"{name} has no description"


def test_every_role_the_controller_pass_checks_exists_with_a_main_entry_point():
    assert set(plan.ROLES) == {p.name for p in ROLES.iterdir() if p.is_dir()}
    for role in plan.ROLES:
        assert (ROLES / role / "tasks" / "main.yml").is_file()


def _documentation(path: Path) -> dict:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "DOCUMENTATION"):
            return yaml.safe_load(node.value.value)
    raise AssertionError(f"{path.relative_to(ROOT)} has no DOCUMENTATION")


def module_documentation(name: str) -> dict:
    """The module's DOCUMENTATION with its doc fragments' options merged in, as ansible-doc
    shows it."""
    doc = _documentation(ROOT / "library" / f"{name}.py")
    for fragment in doc.pop("extends_documentation_fragment", None) or []:
        options = _documentation(ROOT / "doc_fragments" / f"{fragment}.py")["options"]
        assert not set(options) & set(doc["options"]), f"{name} documents {fragment}'s options"
        doc["options"].update(options)
    return doc



def _yaml_of(path: Path, name: str):
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == name):
            return yaml.safe_load(node.value.value)
    return None


@pytest.mark.parametrize("path", sorted((ROOT / "library").glob("*.py")), ids=lambda p: p.stem)
def test_every_module_documents_itself_in_yaml_that_parses(path):
    """What ansible-doc reads: a YAML error hides the module's whole documentation (seen:
    a colon inside a sentence of flashmm_stack's description)."""
    doc = _documentation(path)
    assert doc["module"] == path.stem
    assert doc["short_description"] and doc["description"]
    assert isinstance(doc.get("options", {}), dict)
    assert isinstance(_yaml_of(path, "RETURN") or {}, dict)


@pytest.mark.parametrize("path", sorted((ROOT / "callback_plugins").glob("*.py")),
                         ids=lambda p: p.stem)
def test_every_callback_documents_itself_in_yaml_that_parses(path):
    assert _documentation(path)["name"] == path.stem

def test_flashmm_runtime_documents_exactly_its_options():
    documented = module_documentation("flashmm_runtime")["options"]
    # the seed's options, shared with flashmm_files' runtime option, and the host's lock
    assert set(documented) == set(RUNTIME_OPTIONS) | {"root", "run_id", "lock_timeout", "lease",
                                                      "acl_reload", "audit"}
    for name, spec in RUNTIME_OPTIONS.items():
        assert documented[name]["type"] == spec["type"], name
        assert documented[name].get("default") == spec.get("default"), name
        assert bool(documented[name].get("required")) == bool(spec.get("required")), name


def test_flashmm_files_documents_its_options():
    doc = module_documentation("flashmm_files")
    assert set(doc["options"]) == {"root", "files", "secret_files", "owner", "group",
                                   "directory_mode", "runtime", "run_id", "record_run",
                                   "lock_timeout", "acl_reload", "lease", "generation",
                                   "audit"}
    assert doc["options"]["secret_files"]["suboptions"].keys() == {"path", "content", "mode",
                                                                    "mask_keys", "mask"}


def third_party_imports(directory: Path) -> set[str]:
    names = set()
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names
            and n not in ("flashmm_deploy", "flashmm_config", "redis_client", "redis_url")}


# import name -> distribution name
DISTRIBUTIONS = {"yaml": "PyYAML", "jinja2": "Jinja2", "ansible": "ansible-core",
                 "pydantic_core": "pydantic",   # installed with (and by) pydantic
                 "pydantic": "pydantic", "cryptography": "cryptography",
                 "ruamel": "ruamel.yaml"}


def test_runtime_dependencies_are_exactly_what_src_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {d.split(">")[0].split("<")[0].split("=")[0].strip().lower()
                for d in project["dependencies"]}
    imported = {DISTRIBUTIONS.get(n, n).lower()
                for n in third_party_imports(ROOT / "src")}     # the toolkit and the library
    assert declared == imported


def test_module_utils_are_relative_symlinks_into_the_package():
    for link in (ROOT / "module_utils").glob("flashmm_*.py"):
        assert link.is_symlink(), link
        target = Path(os.readlink(link))
        assert not target.is_absolute() and target.parts[:2] == ("..", "src"), link
        assert link.resolve().is_file(), link


def test_every_test_file_has_a_basename_of_its_own():
    """pytest imports test files by basename (rootdir conftests, no __init__.py): two files of
    one name in different tiers pass apart and fail to collect together."""
    seen: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
