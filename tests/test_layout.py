"""The package's layout: which part of the pipeline may import which (docs/design.md §5)."""

import ast
import subprocess
import sys
from pathlib import Path

import lorasweep

PACKAGE = Path(lorasweep.__file__).resolve().parent
PARTS = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())

# subpackage -> the other subpackages it may import; an arrow not listed here is a design change
ALLOWED = {
    "base": {"training"},  # base_samples samples the untrained base with the worker's own code
    "training": {"base", "study", "analysis"},  # prompts and tokenizer; grid's modes; metrics.TargetTracker
    "launch": {"study", "analysis"},  # the cell spec; the step time the launcher logs
    "study": {"training"},  # config checks reward names against the registry (pure Python)
    "analysis": {"study", "training"},  # grid's names; the degeneracy measures (pure Python)
}


def part_of(path: Path) -> str:
    return path.parent.name if path.parent != PACKAGE else "top"


def imported_parts(path: Path) -> set:
    """The subpackages ``path`` imports from, at any depth of its code (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.ImportFrom) and node.level >= 1):
            continue
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
        if node.module:
            targets = [base.joinpath(*node.module.split("."))]
        else:
            targets = [base / alias.name for alias in node.names]
        for target in targets:
            first = target.relative_to(PACKAGE).parts[0]
            if (PACKAGE / first).is_dir():
                found.add(first)
    return found


def test_the_package_has_the_pipelines_parts():
    assert PARTS == ["analysis", "base", "launch", "study", "training"]


def test_imports_follow_the_allowed_arrows():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = part_of(path)
        if path.name == "__main__.py":
            continue  # the entry points: they call every part
        allowed = {part} if part != "top" else set()
        if part != "top":
            allowed |= ALLOWED[part]
        extra = imported_parts(path) - allowed
        if extra:
            wrong.append(f"{path.relative_to(PACKAGE)} imports {sorted(extra)}")
    assert not wrong, wrong


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


def test_planning_and_analysis_import_no_torch():
    modules = [f"lorasweep.{p.parent.name}.{p.stem}" for part in ("study", "analysis")
               for p in sorted((PACKAGE / part).glob("*.py")) if p.stem != "__init__"]
    code = f"import sys\nimport {', '.join(modules)}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", modules
