"""The stand-in runs in an image with only Debian's python3, python3-yaml and
python3-cryptography plus the files ``scripts/build-images.sh`` copies: every import it makes
(transitively through this package) must be one of those.  Pure: reads source files."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "flashmm_deploy"
THIRD_PARTY = {"yaml", "cryptography"}


def _skipped(node: ast.AST, parents: dict) -> bool:
    """Imports under ``if TYPE_CHECKING:`` or in an ``except ImportError:`` fallback (a bare
    copy of a file side by side) never run in the image."""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.If) and "TYPE_CHECKING" in ast.unparse(parent.test) \
                and node in parent.body:
            return True
        if isinstance(parent, ast.ExceptHandler) and "ImportError" in ast.unparse(parent.type):
            return True
        node = parent
    return False


def imports_of(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative ones resolved)."""
    tree = ast.parse(path.read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if _skipped(node, parents):
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
            if base in ("flashmm_deploy", "flashmm_deploy.standin"):
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return PACKAGE / "__init__.py"
    rel = Path(*parts)
    for candidate in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


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
        seen[name] = imports_of(path)
        todo += [m for m in seen[name] if m.startswith("flashmm_deploy") and module_path(m)]
    return seen


def test_the_app_imports_only_what_its_image_has():
    reached = closure()
    for module, imports in reached.items():
        for name in imports:
            top = name.split(".")[0]
            assert (top in sys.stdlib_module_names or top in THIRD_PARTY
                    or name in reached or name == "flashmm_deploy"), f"{module} imports {name}"
    shared = {m for m in reached if not m.startswith("flashmm_deploy.standin")} - {
        "flashmm_deploy"}
    assert shared == {"flashmm_deploy.redis_client", "flashmm_deploy.redis_url",
                      "flashmm_deploy.env_strings"}


def test_build_images_copies_every_package_module_the_app_imports():
    script = (ROOT / "scripts" / "build-images.sh").read_text()
    body = re.search(r"^app_files\(\) \{\n(.*?)^\}", script, re.S | re.M).group(1)
    for module in closure():
        if module.startswith("flashmm_deploy.standin") or module == "flashmm_deploy":
            continue                       # the whole standin/ directory and __init__.py
        assert f"{module.rsplit('.', 1)[1]}.py" in body, f"{module} is not copied"
    assert '"$APP_SRC/standin"' in body and "__init__.py" in body
