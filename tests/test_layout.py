"""The package's layout: which part of the pipeline may import which (docs/design.md §5)."""

import ast
import subprocess
import sys
from pathlib import Path

import lorasweep

PACKAGE = Path(lorasweep.__file__).resolve().parent
PARTS = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())

# subpackage -> the other subpackages it may import; an arrow not listed here is a design change
# (docs/design.md §5 draws them). Every part may import ``definitions``, which imports no part.
ALLOWED = {
    "definitions": set(),  # the reward registry and the stopping rule: pure Python, imported by every stage
    "base": {"definitions"},
    "training": {"base", "study", "definitions"},  # prompts and tokenizer; grid's modes
    "launch": {"study", "analysis", "definitions"},  # the cell spec; the step time the launcher logs
    "study": {"definitions"},  # config checks reward names against the registry
    "analysis": {"study", "training", "definitions"},  # grid's names; the degeneracy measures (pure Python)
    "bench": {"base", "study", "training", "definitions"},  # benchmark bases and specs, for scripts and tests
}


def part_of(path: Path) -> str:
    return path.parent.name if path.parent != PACKAGE else "top"


def imported_modules(path: Path, package: Path = None) -> set:
    """The package's modules (paths without .py, relative to the package) that ``path`` imports, lazily too.

    Relative imports and absolute ``lorasweep.`` ones both count; ``from . import x`` names module x.
    """
    package = package or PACKAGE
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            module = base.joinpath(*node.module.split(".")) if node.module else base
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lorasweep":
            module = package.joinpath(*node.module.split(".")[1:])
        else:
            continue
        names = [module / alias.name for alias in node.names]
        for target in [module, *names]:
            if target.with_suffix(".py").exists() or (target / "__init__.py").exists():
                found.add(target.relative_to(package))
    return found


def imported_parts(path: Path) -> set:
    """The subpackages ``path`` imports from, at any depth of its code (lazy imports too)."""
    return {module.parts[0] for module in imported_modules(path) if module.parts
            and (PACKAGE / module.parts[0]).is_dir()}


def import_cycles(package: Path) -> list:
    """Circles in the graph of modules importing modules (a package counts as its __init__): each as a list."""
    graph = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).with_suffix("")
        if name.name == "__init__":
            name = name.parent
        graph[name] = {m for m in imported_modules(path, package) if m != name and m != name.parent}
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([str(m) for m in stack[stack.index(nxt):]] + [str(nxt)])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def part_cycles(allowed: dict) -> list:
    """Circles among the subpackages in an arrow table."""
    cycles = []

    def walk(path):
        for nxt in sorted(allowed.get(path[-1], ())):
            if nxt == path[0]:
                cycles.append(path + [nxt])
            elif nxt not in path:
                walk(path + [nxt])

    for part in sorted(allowed):
        walk([part])
    return cycles


def test_the_package_has_the_pipelines_parts():
    assert PARTS == ["analysis", "base", "bench", "definitions", "launch", "study", "training"]


def wrong_arrows(package: Path) -> list:
    """'module imports [parts]' for every import of a part that the module's own part may not import."""
    wrong = []
    for path in sorted(package.rglob("*.py")):
        part = path.parent.name if path.parent != package else "top"
        if path.name == "__main__.py":
            continue  # the entry points: they call every part
        allowed = {part} | ALLOWED.get(part, set()) if part != "top" else set()
        extra = {m.parts[0] for m in imported_modules(path, package)
                 if m.parts and (package / m.parts[0]).is_dir()} - allowed
        if extra:
            wrong.append(f"{path.relative_to(package)} imports {sorted(extra)}")
    return wrong


def test_imports_follow_the_allowed_arrows():
    assert wrong_arrows(PACKAGE) == []


def test_the_arrow_check_sees_a_wrong_import(tmp_path):
    # a study module importing the launcher would be a new arrow: the check must catch it
    (tmp_path / "study").mkdir()
    module = tmp_path / "study" / "x.py"
    module.write_text("from ..launch import cell\nfrom . import grid\nfrom .. import atomic\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path
    try:
        (tmp_path / "launch").mkdir()
        (tmp_path / "launch" / "__init__.py").write_text("")
        (tmp_path / "study" / "__init__.py").write_text("")
        assert imported_parts(module) == {"launch", "study"}
    finally:
        PACKAGE = saved


def test_no_module_imports_itself_round_a_circle():
    assert import_cycles(PACKAGE) == []


def test_the_allowed_arrows_have_no_circle():
    assert part_cycles(ALLOWED) == []


def test_the_circle_checks_see_a_planted_circle(tmp_path):
    # two modules importing each other (as sampler and static_decode once did), and an arrow table
    # with a circle between two parts: both checks must name them
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("")
    (tmp_path / "training" / "a.py").write_text("from .b import thing\n")
    (tmp_path / "training" / "b.py").write_text("def f():\n    from . import a\n")
    assert import_cycles(tmp_path) == [["training/a", "training/b", "training/a"]]
    assert part_cycles({"base": {"training"}, "training": {"base"}}) == [["base", "training", "base"],
                                                                         ["training", "base", "training"]]


def test_the_arrow_check_sees_an_upward_arrow_in_the_package_as_it_is(tmp_path):
    # a copy of the package with one upward arrow planted: definitions importing the analysis
    copy = tmp_path / "lorasweep"
    import shutil

    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "definitions" / "planted.py").write_text("def f():\n    from ..analysis import metrics\n")
    assert wrong_arrows(copy) == ["definitions/planted.py imports ['analysis']"]


def test_planning_and_analysis_import_no_torch():
    modules = [f"lorasweep.{p.parent.name}.{p.stem}" for part in ("study", "analysis")
               for p in sorted((PACKAGE / part).glob("*.py")) if p.stem != "__init__"]
    code = f"import sys\nimport {', '.join(modules)}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", modules
