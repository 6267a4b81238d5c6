"""The package is installed, and a copy of the workflow still runs its own copy of it.

The workflow tests run a private copy of the workflow (tests/workflow.py); with the
package installed in editable mode they must exercise the copy's code, not the
checkout's: Snakemake puts the Snakefile's folder first on sys.path while planning, and
the rules run ``python -m lorasweep`` in the workflow's folder, which comes first there.
"""

import subprocess
import sys

from workflow import copy_workflow, snakemake

MARK = "\n\nfrom ..errors import LorasweepError\n\n\ndef plan(resolved):\n    raise LorasweepError('planned by the copy of the workflow')\n"


def test_planning_imports_the_package_of_the_workflows_own_folder(tmp_path):
    copy_workflow(tmp_path)
    with open(tmp_path / "lorasweep" / "study" / "grid.py", "a", encoding="utf-8") as handle:
        handle.write(MARK)
    out = snakemake(tmp_path, "--dry-run", "--config", "scale=cpu", check=False)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert "planned by the copy of the workflow" in text
    assert str(tmp_path / "lorasweep" / "study" / "grid.py") in text


def test_a_rules_entry_point_imports_the_package_of_the_workflows_folder(tmp_path):
    # `python -m lorasweep ...` and `python -c` both put the working folder first on sys.path
    copy_workflow(tmp_path)
    found = subprocess.run([sys.executable, "-c", "import lorasweep; print(lorasweep.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found == str(tmp_path / "lorasweep" / "__init__.py")
