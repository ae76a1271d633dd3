"""The architecture as docs/architecture.md states it, checked against the code.

- every module of `pipeline/` is in the doc's module table, and the table names no module that
  is gone;
- imports only go down the doc's layer list (or stay inside a layer), and no two modules import
  each other, directly or in a circle (lazy imports count; `if TYPE_CHECKING:` ones do not);
- every file name of a run folder is written in one module (`pipeline/runs/folder.py`);
- no top-level class, function or constant name is defined in two modules.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"
DOC = ROOT / "docs" / "architecture.md"


def _modules() -> dict[str, Path]:
    """'execution/sweep.py' -> path, for every module with code (empty __init__.py files excluded)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py") and not path.read_text().strip():
            continue
        out[path.relative_to(PACKAGE).as_posix()] = path
    return out


def _doc_section(title: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"docs/architecture.md has no section '## {title}'"
    return match.group(1)


def _layers() -> list[list[str]]:
    """The doc's layer list, top to bottom: each layer's packages and top-level modules."""
    layers = []
    for line in _doc_section("Layers (imports go down)").splitlines():
        match = re.match(r"^\d+\.\s+(.*)$", line.strip())
        if match:
            layers.append(re.findall(r"`([^`]+)`", match.group(1)))
    assert layers, "no numbered layer list"
    return layers


def _unit(module: str) -> str:
    """The layer unit of a module: its package folder (`execution/`) or itself (`profile.py`)."""
    return module.split("/")[0] + "/" if "/" in module else module


def _imports(path: Path) -> set[str]:
    """pipeline modules imported by `path` (as 'execution/sweep.py' or 'execution/'), TYPE_CHECKING excluded."""
    tree = ast.parse(path.read_text())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("pipeline")]
        for name in names:
            rel = name.split(".")[1:]
            for candidate in ("/".join(rel) + ".py", "/".join(rel) + "/__init__.py"):
                if (PACKAGE / candidate).is_file():
                    found.add(candidate)
    return found


def test_the_module_table_lists_every_module_and_no_other():
    listed = set(re.findall(r"^\| `([^`]+\.py)` \|", _doc_section("Modules"), re.M))
    actual = set(_modules())
    assert not actual - listed, f"modules missing from docs/architecture.md: {sorted(actual - listed)}"
    assert not listed - actual, f"docs/architecture.md lists modules that do not exist: {sorted(listed - actual)}"


def test_imports_only_go_down_the_layers():
    layers = _layers()
    rank = {unit: i for i, layer in enumerate(layers) for unit in layer}
    modules = _modules()
    unplaced = sorted({_unit(m) for m in modules} - set(rank))
    assert not unplaced, f"not in the doc's layer list: {unplaced}"
    upward = []
    for module, path in modules.items():
        for imported in _imports(path):
            if rank[_unit(imported)] < rank[_unit(module)]:
                upward.append(f"{module} imports {imported}")
    assert not upward, "imports that go up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    graph = {m: {i for i in _imports(p) if not i.endswith("__init__.py")} for m, p in _modules().items()}
    # Depth-first search for a back edge; report the circle found.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module)):
            pytest.fail("import circle: " + " -> ".join(circle))


RUN_FOLDER_NAMES = ("config.yaml", "history.json", "summary.json", "lr_schedule.csv", "last.pt", "best.pt",
                    "val_predictions", "error.txt", "worker.log", "spec.json", "predictions.npz")


@pytest.mark.parametrize("name", RUN_FOLDER_NAMES)
def test_each_run_folder_file_is_named_in_one_module(name):
    holders = sorted(m for m, p in _modules().items() if name in p.read_text())
    assert holders == ["runs/folder.py"], f"{name!r} is written in {holders}"


def test_no_name_is_defined_in_two_modules():
    # `register` (each CLI module's subcommands) and `main` (an entry point) mean the same everywhere.
    shared = {"register", "main"}
    defined = defaultdict(list)
    for module, path in _modules().items():
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()]
            for name in names:
                defined[name].append(module)
    twice = {n: ms for n, ms in defined.items() if len(ms) > 1 and n not in shared}
    assert not twice, f"names defined in several modules: {twice}"
