"""The house's shape: the kernel (`shared/`) knows no service, no service imports another, only the entry point
(`services/market`) composes them all, and no module of `shared/` or `services/` is part of an import cycle
(imports inside functions count too: deferring one hides a cycle, it does not remove it)."""

import ast
from pathlib import Path

import pytest

from services.market import registry
from shared.settings import SERVICES

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for top in ("shared", "services") for path in (ROOT / top).rglob("*.py")
           if "migrations" not in path.relative_to(ROOT).parts[1:3] or path.name == "__init__.py"}


def imports_of(module: str) -> set[str]:
    """The project modules `module` imports, anywhere in its code (`from a import b` counts as a.b if a.b is a
    module, else as a)."""
    found = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles() -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), i.e. every import cycle."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return groups


def test_no_module_of_shared_or_services_is_in_an_import_cycle():
    assert len(GRAPH) > 50  # the walk found the project
    assert cycles() == []


def test_the_cycle_finder_finds_one():
    GRAPH["shared.settings"].add("shared.outbox")  # outbox -> db -> settings: closing it makes a cycle
    try:
        assert any({"shared.settings", "shared.outbox"} <= set(group) for group in cycles())
    finally:
        GRAPH["shared.settings"].discard("shared.outbox")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("shared")))
def test_the_kernel_imports_no_service(module):
    assert not {name for name in GRAPH[module] if name.startswith("services")}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_itself_and_the_kernel(service):
    own = f"services.{service}"
    for module in (m for m in MODULES if m == own or m.startswith(f"{own}.")):
        foreign = {name for name in GRAPH[module] if name.startswith("services") and
                   not (name == own or name.startswith(f"{own}."))}
        assert not foreign, f"{module} imports {sorted(foreign)}"


def test_the_root_of_services_holds_the_five_services_and_the_entry_point():
    folders = {path.name for path in (ROOT / "services").iterdir() if path.is_dir() and path.name != "__pycache__"}
    files = {path.name for path in (ROOT / "services").glob("*.py")}
    assert folders == {*SERVICES, "market"} and files == {"__init__.py", "__main__.py"}
    assert set(registry.DECLARED) == set(SERVICES)
    assert all(registry.DECLARED[name].package == f"services.{name}" for name in SERVICES)
