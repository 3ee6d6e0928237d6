"""The local Azure is sealed: it imports nothing from the rest of azrun, and has no import cycle.

Static: every module of ``azrun/sim`` is parsed (not imported), so a lazy import inside a
function or under ``TYPE_CHECKING`` counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SIM = Path(__file__).resolve().parents[2] / "azrun" / "sim"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SIM.parent.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every absolute module name a file imports (``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SIM.rglob("*.py"))}


def test_sim_imports_nothing_from_the_rest_of_azrun() -> None:
    offenders = {
        f"{name}: {imp}"
        for name, path in _modules().items()
        for imp in _imports(path)
        if (imp == "azrun" or imp.startswith("azrun.")) and not (imp == "azrun.sim" or imp.startswith("azrun.sim."))
    }
    assert not offenders, sorted(offenders)


def test_sim_has_no_import_cycle() -> None:
    modules = _modules()
    graph = {
        name: {imp for imp in _imports(path) if imp in modules and imp != name and not name.startswith(imp + ".")}
        for name, path in modules.items()
    }
    # A package's __init__ importing its own submodules is not a cycle through them.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle.extend([*stack[stack.index(dep) :], dep] if dep in stack else [node, dep])
                return True
            if dep not in state and visit(dep, [*stack, dep]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if name not in state and visit(name, [name]):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_checks_see_the_modules() -> None:
    """Guard against a vacuous pass: the walk finds the sim's modules and their imports."""
    modules = _modules()
    assert "azrun.sim.arm.app" in modules and "azrun.sim.state" in modules
    assert "azrun.sim.state" in _imports(modules["azrun.sim.arm.app"])
