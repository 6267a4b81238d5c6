"""Each stage's code hash covers the modules the stage runs, so editing one reruns it."""

import ast
import shutil

import pytest

from lorasweep.study import codehash


STAGE_PACKAGES = {path.name for path in codehash.PACKAGE.iterdir() if (path / "__init__.py").exists()}


def package_imports(module: str) -> set:
    """The lorasweep modules ``module`` imports, anywhere in it: ``from . import x``,
    ``from .x import y``, ``from ..stage import x``, ``from ..stage.x import y``."""
    tree = ast.parse(codehash.module_paths()[module].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            last = node.module.split(".")[-1] if node.module else None
            found.update([alias.name for alias in node.names] if last in (None, *STAGE_PACKAGES) else [last])
    return found


def imported_closure(entries) -> set:
    """Every module the entries reach by imports; what only NOT_HASHED modules import is not followed."""
    seen, todo = set(), list(entries)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            if module not in codehash.NOT_HASHED:
                todo.extend(package_imports(module))
    return seen


@pytest.mark.parametrize("stage", sorted(codehash.STAGE_MODULES))
def test_a_stage_hashes_every_module_it_runs(stage):
    runs = imported_closure(codehash.STAGE_ENTRIES[stage])
    missing = runs - set(codehash.STAGE_MODULES[stage]) - codehash.NOT_HASHED
    assert not missing, f"stage {stage} runs {sorted(missing)} but does not hash them"
    assert set(codehash.STAGE_MODULES[stage]) <= runs, "a hashed module the stage never imports"


def test_the_closure_follows_lazy_imports():
    # report is imported inside a function of __main__; aggregate's plots come through report
    assert "plots" in imported_closure(["report"]) and "report" in package_imports("__main__")


def test_editing_a_stage_module_changes_only_the_hashes_of_stages_that_run_it(tmp_path, monkeypatch):
    before = codehash.stage_hashes()
    copy = tmp_path / "lorasweep"
    shutil.copytree(codehash.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    report = copy / "analysis" / "report.py"
    report.write_text(report.read_text() + "\n# edited\n")
    monkeypatch.setattr(codehash, "PACKAGE", copy)
    after = codehash.stage_hashes()
    assert {stage for stage in before if before[stage] != after[stage]} == {"aggregate"}
