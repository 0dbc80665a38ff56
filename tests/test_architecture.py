"""The house rules of ARCHITECTURE.md, checked: layers import downwards only, the core stands alone, no cycles,
every third-party import is a declared dependency, and modules stay readable (<= ~400 lines or say why)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hierars"
ROOT = PKG.parent

#: layer rank by module prefix (longest prefix wins); a module may import its own rank or lower ones
LAYERS = {"hierars": 0, "hierars.data": 1, "hierars.training": 2, "hierars.plotting": 3, "hierars.plotting_curves": 3,
          "hierars.plotting_paper": 3, "hierars.plotting_figures": 3, "hierars.plotting_tree": 3,
          "hierars.project": 4}
NAMES = {0: "core", 1: "data", 2: "training", 3: "plotting", 4: "project"}
#: the one upward import allowed: the package root's PEP 562 ``__getattr__`` resolves ``hierars.load_model`` from
#: the data layer on first access (ARCHITECTURE.md); (module, target), and only inside a function, never at import
LAZY_FACADES = {("hierars", "hierars.data.saved_model")}
#: distribution name (pyproject) -> import name, where they differ
IMPORT_NAMES = {"segmentation-models-pytorch": "segmentation_models_pytorch", "pyyaml": "yaml",
                "faiss-cpu": "faiss", "pillow": "PIL", "ipython": "IPython"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _all_modules() -> set[str]:
    return {_module_name(p) for p in PKG.rglob("*.py")}


def _rank(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module, top))
                # `from hierars import atomic` imports the submodule hierars.atomic
                out.extend((f"{child.module}.{a.name}", top) for a in child.names
                           if f"{child.module}.{a.name}" in _all_modules())
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(tree, True)
    return out


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module: str) -> None:
    rank = _rank(module)
    for target, top in _imports(MODULES[module]):
        if (module, target) in LAZY_FACADES and not top:
            continue
        if target.split(".")[0] == "hierars" and target != "hierars":
            assert _rank(target) <= rank, (
                f"{module} ({NAMES[rank]}) imports {target} ({NAMES[_rank(target)]}): layers import downwards only")
    if rank < LAYERS["hierars.plotting"]:
        assert not any(t.split(".")[0] == "matplotlib" for t, _ in _imports(MODULES[module])), \
            f"{module} imports matplotlib; only plotting and the project layer may"


def test_third_party_imports_are_declared_dependencies() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = set()
    for d in deps:
        dist = d.split(";")[0].strip()
        for sep in "<>=!~[ ":
            dist = dist.split(sep)[0]
        names.add(IMPORT_NAMES.get(dist.lower(), dist.replace("-", "_")))
    # the `pipeline` extra (Jupyter widgets for the path explorer) may be imported inside a function only
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["pipeline"]
    lazy_names = {IMPORT_NAMES.get(d.lower(), d.replace("-", "_")) for d in extra}
    undeclared = {}
    for module, path in MODULES.items():
        for target, top_level in _imports(path):
            top = target.split(".")[0]
            if not top_level and top in lazy_names:
                continue
            if top != "hierars" and top not in sys.stdlib_module_names and top not in names:
                undeclared.setdefault(top, []).append(module)
    assert not undeclared, f"imports of packages not in pyproject dependencies: {undeclared}"


def test_no_import_cycles_at_module_level() -> None:
    graph = {m: {t for t, top in _imports(p) if top and t in MODULES and t != m} for m, p in MODULES.items()}
    # a package's __init__ re-exporting its submodules is not a cycle of concepts: drop edges into a parent package
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}

    def dfs(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t] if t in stack else [m, t]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if t not in state:
                dfs(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])


def test_core_import_pulls_in_no_upper_layer() -> None:
    """Importing every core module in a fresh interpreter loads no data/training/plotting/project module and
    no matplotlib."""
    core = [m for m in MODULES if _rank(m) == 0]
    code = ("import importlib, json, sys\n"
            f"for m in {core!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       cwd=ROOT).stdout)
    upper = [m for m in loaded if m.split(".")[0] == "hierars" and m in MODULES and _rank(m) > 0]
    assert not upper, f"importing the core loaded {upper}"
    assert not [m for m in loaded if m.split(".")[0] == "matplotlib"], "importing the core loaded matplotlib"


def test_modules_stay_readable() -> None:
    long = {}
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        if len(lines) > 420 and not any("Over 400 lines on purpose" in line for line in lines[:8]):
            long[module] = len(lines)
    assert not long, f"modules over ~400 lines without a line at the top saying why: {long}"
