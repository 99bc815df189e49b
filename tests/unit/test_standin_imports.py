"""The stand-in runs in an image with only Debian's python3, python3-yaml and
python3-cryptography plus the files ``scripts/build-images.sh`` copies: every import it makes
(transitively through this package and the client library ``flashmm_config`` it is built on)
must be one of those.  The library's runtime *set* imports the deploy toolkit's validator
(pydantic) inside the functions that validate a set, which the stand-in never calls: those
function-level imports are the only ones left out.  Pure: reads source files."""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "flashmm_deploy"
LIBRARY = "flashmm_config"
# The library's functions that import pydantic (through flashmm_deploy.config.validate) when
# called: the validation of a runtime set.
SET_ONLY = {"flashmm_config.validation": {"_issues"}, "flashmm_config.manager": {"_lower_layers"}}
THIRD_PARTY = {"yaml", "cryptography"}


def _skipped(node: ast.AST, parents: dict, lazy: set[str] = frozenset()) -> bool:
    """Imports under ``if TYPE_CHECKING:`` or in an ``except ImportError:`` fallback (a bare
    copy of a file side by side) never run in the image; nor do those of the ``lazy``
    functions."""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.FunctionDef) and parent.name in lazy:
            return True
        if isinstance(parent, ast.If) and "TYPE_CHECKING" in ast.unparse(parent.test) \
                and node in parent.body:
            return True
        if isinstance(parent, ast.ExceptHandler) and "ImportError" in ast.unparse(parent.type):
            return True
        node = parent
    return False


def imports_of(path: Path, lazy: set[str] = frozenset()) -> set[str]:
    """Absolute module names ``path`` imports (relative ones resolved)."""
    tree = ast.parse(path.read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _skipped(node, parents, lazy):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base == "__future__":
                continue
            found.add(base)
            if base.startswith(("flashmm_deploy", LIBRARY)):    # from a package import a module
                found.update(f"{base}.{alias.name}" for alias in node.names
                             if module_path(f"{base}.{alias.name}"))
    # Importing a module runs its packages' __init__.py first.
    for name in [n for n in found if n.startswith("flashmm_deploy.")]:
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(2, len(parts)))
    return found


def module_path(name: str) -> Path | None:
    top, *parts = name.split(".")
    package = PACKAGE.parent / top
    if not parts:
        return package / "__init__.py"
    rel = Path(*parts)
    for candidate in (package / rel.with_suffix(".py"), package / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def closure() -> dict[str, set[str]]:
    """Every package module the app reaches -> its imports."""
    todo = [f"flashmm_deploy.standin.{p.stem}" if p.stem != "__init__" else
            "flashmm_deploy.standin" for p in (PACKAGE / "standin").glob("*.py")]
    seen: dict[str, set[str]] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_path(name)
        assert path is not None, f"{name} does not exist"
        seen[name] = imports_of(path, SET_ONLY.get(name, set()))
        todo += [m for m in seen[name] if m.startswith(("flashmm_deploy", LIBRARY))
                 and module_path(m)]
    return seen


def test_the_app_imports_only_what_its_image_has():
    reached = closure()
    for module, imports in reached.items():
        for name in imports:
            top = name.split(".")[0]
            assert (top in sys.stdlib_module_names or top in THIRD_PARTY
                    or name in reached or name == "flashmm_deploy"), f"{module} imports {name}"
    shared = {m for m in reached if not m.startswith(("flashmm_deploy.standin", LIBRARY))} - {
        "flashmm_deploy"}
    assert shared == {"flashmm_deploy.redis", "flashmm_deploy.redis.client",
                      "flashmm_deploy.redis.endpoint", "flashmm_deploy.redis.resp",
                      "flashmm_deploy.redis.tls", "flashmm_deploy.redis.keys",
                      "flashmm_deploy.redis_ext", "flashmm_deploy.redis_ext.url",
                      "flashmm_deploy.redis_ext.pubsub",
                      "flashmm_deploy.config", "flashmm_deploy.config.env_strings"}


def test_build_images_copies_every_package_module_the_app_imports():
    script = (ROOT / "scripts" / "build-images.sh").read_text()
    body = re.search(r"^app_files\(\) \{\n(.*?)^\}", script, re.S | re.M).group(1)
    for module in closure():
        if module.startswith(("flashmm_deploy.standin", LIBRARY)) or module == "flashmm_deploy":
            continue                       # the whole standin/ and library directories
        path = module_path(module).relative_to(PACKAGE).as_posix()  # e.g. redis/__init__.py
        assert path in body, f"{module} ({path}) is not copied"
    assert '"$APP_SRC/standin"' in body and "__init__.py" in body and '"$LIB_SRC"' in body
    assert 'LIB_SRC="src/flashmm_config"' in script


def test_the_library_is_what_the_app_runs_on_and_pydantic_only_on_a_set():
    reached = closure()
    assert {"flashmm_config.manager", "flashmm_config.validation"} <= set(reached)
    for module, functions in SET_ONLY.items():
        lazy = imports_of(module_path(module)) - imports_of(module_path(module), functions)
        assert lazy and all(name.startswith("flashmm_deploy.") for name in lazy), lazy
