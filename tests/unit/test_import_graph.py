"""The package's import graph, read from the source with ``ast`` (every import: top-level,
function-level, under ``try``): no import cycle anywhere in ``src/``, and the modules shipped to
target hosts (the targets of ``module_utils/flashmm_*.py``) import only the standard library and
each other."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGES = ("flashmm_deploy", "flashmm_config")
SHIPPED_PREFIX = "ansible.module_utils.flashmm_"
# What a shipped module may need on a host beyond the standard library, and why.
HOST_DEPENDENCIES = {
    "flashmm_deploy.record_keys": {"cryptography"},   # Fernet records; python3-cryptography
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in (SRC / package).rglob("*.py")}
SHIPPED = {f"flashmm_deploy.{link.resolve().stem}": link.name[:-3]
           for link in (ROOT / "module_utils").glob("flashmm_*.py")}
BY_SHIPPED_NAME = {name: module for module, name in SHIPPED.items()}


def imports_of(name: str) -> dict[str, int]:
    """Every module ``name`` imports (absolute names, submodules resolved) -> a line."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.setdefault(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:          # from a package import a module: the module
                sub = f"{target}.{alias.name}"
                if sub in MODULES or (target == "ansible.module_utils"
                                      and sub.startswith(SHIPPED_PREFIX)):
                    found.setdefault(sub, node.lineno)
                else:
                    found.setdefault(target, node.lineno)
    return found


def internal(target: str) -> str | None:
    """The src module an import names (a shipped module_utils name counts as its source)."""
    if target.startswith(SHIPPED_PREFIX):
        return BY_SHIPPED_NAME.get(target[len("ansible.module_utils."):])
    return target if target in MODULES else None


GRAPH = {name: {t: line for t, line in ((internal(t), line)
                                        for t, line in imports_of(name).items())
                if t is not None and t != name}
         for name in MODULES}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_reader_sees_the_package():
    assert {"flashmm_deploy.redis_client", "flashmm_deploy.standin.app",
            "flashmm_config.manager"} <= set(MODULES)
    assert "flashmm_deploy.redis_client" in SHIPPED
    # function-level imports count: one the package is known to have
    assert "flashmm_deploy.runtime" in GRAPH["flashmm_deploy.host_validation"]


def test_cycles_are_found():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [
        ["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycle():
    problems = []
    for component in cycles(GRAPH):
        members = set(component)
        edges = [f"{a} -> {b} (line {line})" for a in component
                 for b, line in sorted(GRAPH[a].items()) if b in members]
        problems.append("cycle: " + "; ".join(edges))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", sorted(SHIPPED))
def test_shipped_modules_import_only_the_stdlib_and_each_other(module):
    allowed = HOST_DEPENDENCIES.get(module, set())
    wrong = []
    for target, line in sorted(imports_of(module).items()):
        top = target.split(".")[0]
        if top in sys.stdlib_module_names or top in allowed:
            continue
        if target.startswith(SHIPPED_PREFIX):
            ok = target[len("ansible.module_utils."):] in BY_SHIPPED_NAME
        else:
            ok = target in SHIPPED
        if not ok:
            wrong.append(f"line {line}: {target}")
    assert not wrong, f"{module} (shipped to targets) imports " + ", ".join(wrong)


@pytest.mark.parametrize("module", sorted(SHIPPED))
def test_shipped_modules_import_each_other_as_targets_see_them(module):
    """A shipped module imports a sibling from the package and, failing that, under the name
    module_utils ships it as; never one without the other."""
    targets = imports_of(module)
    package = {t for t in targets if t in SHIPPED}
    as_shipped = {BY_SHIPPED_NAME[t[len("ansible.module_utils."):]]
                  for t in targets if t.startswith(SHIPPED_PREFIX)}
    assert package == as_shipped
