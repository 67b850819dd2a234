"""The package's imports go one way: no cycles, and no import from a lower layer up to a higher
one (issue 20). Read statically from the source, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
# lowest first; a module may import its own layer and the layers below it
LAYERS: list[set[str]] = [
    {"paths", "instantiate", "checkpoints", "models", "data", "studies"},
    {"training", "parallel"},
    {"callbacks"},
    {"runs", "inference"},
    {"analysis", "benchmark"},
    {"cli", "module"},  # module: the documented path of ImageClassifier, a re-export
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "classicnets").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for imp in names:
            while imp and imp not in known:  # the longest module the import names
                imp = imp.rpartition(".")[0]
            if imp and imp != name and not name.startswith(imp + "."):
                found.add(imp)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:  # the package's own __init__
        return None
    return next(i for i, group in enumerate(LAYERS) if parts[1] in group)


def test_every_top_level_name_has_a_layer() -> None:
    names = {m.split(".")[1] for m in _modules() if "." in m}
    placed = set().union(*LAYERS)
    assert names <= placed, f"give {sorted(names - placed)} a layer in LAYERS"


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_only_go_down() -> None:
    upward = []
    for module, targets in _graph().items():
        mine = _layer(module)
        for target in targets:
            theirs = _layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a lower layer up to a higher one:\n" + "\n".join(upward)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The walk above would catch what it is for (so a pass means something)."""
    known = {"classicnets.runs.a": tmp_path / "a.py", "classicnets.models.b": tmp_path / "b.py"}
    known["classicnets.runs.a"].write_text("from classicnets.models import b\n")
    known["classicnets.models.b"].write_text("def f():\n    from classicnets.runs.a import x\n")
    b_imports = _imports("classicnets.models.b", known["classicnets.models.b"], known)
    assert b_imports == {"classicnets.runs.a"}
    assert _layer("classicnets.runs.a") > _layer("classicnets.models.b")
