"""The package's import graph, read from the source with ``ast`` (every import: top-level,
function-level, under ``try``): no import cycle anywhere in ``src/``, no import upwards in the
layer order below, and the modules shipped to target hosts (``redis/`` and ``hostside/``, exactly
the targets of ``module_utils/flashmm_*.py``) import only the standard library and each other."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGES = ("flashmm_deploy", "flashmm_config")
SHIPPED_PREFIX = "ansible.module_utils.flashmm_"
# The layers, lowest first: a module imports its own layer and those before it, never a later
# one.  Each is a subpackage of flashmm_deploy, except flashmm_config (the client library: it
# reads config/env_strings and validates a runtime set with config/validate; cli/runtime and the
# stand-in are built on it).  README "Layout" says what each holds.
LAYERS = ("core", "redis", "redis_ext", "hostside", "config", "flashmm_config", "inventory",
          "secrets", "render", "plan", "backup", "reports", "cli", "standin")
# The layers Ansible ships to target hosts (module_utils/ links every module in them).
SHIPPED_LAYERS = ("redis", "hostside")
# What a shipped module may need on a host beyond the standard library, and why.
HOST_DEPENDENCIES = {
    "flashmm_deploy.hostside.record_keys": {"cryptography"},   # Fernet; python3-cryptography
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in (SRC / package).rglob("*.py")}
SHIPPED = {module_name(link.resolve()): link.name[:-3]
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


def import_time_imports(name: str) -> set[str]:
    """What importing ``name`` imports at once: the imports at module level and in class bodies
    (under ``if``/``try`` too), not those inside functions."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)] \
                    if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in MODULES else target)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit(inner)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def import_time_closure(name: str) -> set[str]:
    """Every module importing ``name`` loads: its import-time imports, followed through the
    package's own modules."""
    seen, todo = set(), [name]
    while todo:
        here = todo.pop()
        for target in import_time_imports(here):
            if target not in seen:
                seen.add(target)
                if target in MODULES:
                    todo.append(target)
    return seen


# Modules an Ansible worker imports for a small job, in every worker that does it: importing
# them must not build the schema (pydantic, config.schema: ~0.13 s of CPU each time).
LIGHT = {
    "flashmm_deploy.reports.filters": "filter_plugins/flashmm.py, in every worker that templates "
                                      "a filter (rotate_kinds: most tasks of a rotation)",
    "flashmm_deploy.secrets.rotation": "flashmm_rotation_kinds",
}
HEAVY = ("pydantic", "flashmm_deploy.config.schema")


@pytest.mark.parametrize("module", sorted(LIGHT))
def test_modules_imported_for_a_small_job_do_not_load_the_schema(module):
    loaded = import_time_closure(module)
    heavy = [h for h in HEAVY if any(m == h or m.startswith(h + ".") for m in loaded)]
    assert not heavy, f"importing {module} ({LIGHT[module]}) loads {heavy}"


def test_the_import_time_closure_follows_module_level_imports_only():
    closure = import_time_closure("flashmm_deploy.config.layers")
    assert "flashmm_deploy.config.schema" in closure and "pydantic" in closure
    # host_validation imports config.runtime inside a function only
    assert "flashmm_deploy.config.runtime" in GRAPH["flashmm_deploy.inventory.host_validation"]
    assert "flashmm_deploy.config.runtime" not in import_time_imports(
        "flashmm_deploy.inventory.host_validation")


def test_the_checks_validate_runs_do_not_load_the_renderer():
    """``flashmm-config validate`` runs the deploy's host checks, not the rendering: a process
    that loads the renderer, the preflight checks and the secret files pays ~6 ms more."""
    loaded = import_time_closure("flashmm_deploy.plan.host_checks")
    assert "flashmm_deploy.config.role_settings" in loaded          # the closure is real
    unneeded = sorted(m for m in loaded if m.startswith((
        "flashmm_deploy.render", "flashmm_deploy.plan.preflight", "flashmm_deploy.plan.plan",
        "flashmm_deploy.secrets")))
    assert not unneeded, unneeded


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
    assert {"flashmm_deploy.redis.client", "flashmm_deploy.standin.app",
            "flashmm_config.manager"} <= set(MODULES)
    assert "flashmm_deploy.redis.client" in SHIPPED
    # function-level imports count: one the package is known to have
    assert "flashmm_deploy.config.runtime" in GRAPH["flashmm_deploy.inventory.host_validation"]


def layer_of(name: str) -> str | None:
    """``flashmm_deploy.<layer>.<module>`` -> layer; ``flashmm_config.*`` -> flashmm_config;
    the bare root package ``flashmm_deploy`` (empty) -> None."""
    parts = name.split(".")
    if parts[0] == "flashmm_config":
        return "flashmm_config"
    return parts[1] if len(parts) > 1 else None


def test_every_module_sits_in_a_layer():
    stray = [name for name in MODULES if name != "flashmm_deploy" and layer_of(name) not in LAYERS]
    assert not stray, f"modules outside the layers {LAYERS}: {sorted(stray)}"
    packages = {p.name for p in (SRC / "flashmm_deploy").iterdir()
                if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LAYERS) - {"flashmm_config"}
    assert (SRC / "flashmm_deploy" / "__init__.py").read_text().strip() == ""


def test_layer_check_catches_an_upward_import():
    assert upward({"flashmm_deploy.core.errors": {"flashmm_deploy.config.schema": 3}}) == [
        "flashmm_deploy.core.errors (core) -> flashmm_deploy.config.schema (config), line 3"]
    assert upward({"flashmm_deploy.cli.app": {"flashmm_deploy.core.errors": 3}}) == []


def upward(graph: dict[str, dict[str, int]]) -> list[str]:
    wrong = []
    for name, targets in sorted(graph.items()):
        here = layer_of(name)
        for target, line in sorted(targets.items()):
            there = layer_of(target)
            if here and there and LAYERS.index(there) > LAYERS.index(here):
                wrong.append(f"{name} ({here}) -> {target} ({there}), line {line}")
    return wrong


def test_imports_only_go_down_the_layers():
    wrong = upward(GRAPH)
    assert not wrong, "imports upwards:\n" + "\n".join(wrong)


def test_package_inits_import_nothing_of_the_package_on_import():
    """Importing ``flashmm_deploy.x.y`` runs ``flashmm_deploy/x/__init__.py`` first: those import
    nothing, not even inside a function, so a module never drags its siblings in and no import
    of a package leads back to a module importing it (the entry point is ``cli.app:main``)."""
    for name, path in MODULES.items():
        if path.name != "__init__.py" or not name.startswith("flashmm_deploy"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                 and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
        assert not found, f"{path.relative_to(ROOT)} imports"


def test_what_is_shipped_is_exactly_redis_and_hostside():
    in_layers = {name for name, path in MODULES.items()
                 if layer_of(name) in SHIPPED_LAYERS and path.name != "__init__.py"}
    assert set(SHIPPED) == in_layers
    for link in (ROOT / "module_utils").glob("flashmm_*.py"):
        assert not Path(link.readlink()).is_absolute(), f"{link.name}: an absolute link"


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


def test_the_project_root_is_found_from_the_package():
    """``core.paths`` finds the checkout from its own place in it (one place knows it)."""
    from flashmm_deploy.core.paths import project_root

    assert project_root() == ROOT


LONG = 350          # lines; a longer module says why on its first line


def test_no_long_module_without_a_reason():
    wrong = []
    for path in sorted(MODULES.values()):
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > LONG and not lines[0].startswith(f"# Over {LONG} lines: "):
            wrong.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert not wrong, f"over {LONG} lines without a '# Over {LONG} lines: <why>' first line: {wrong}"
