"""`make lint`: snakemake --lint fails only on lints the project has not accepted."""

import importlib.util
import subprocess
import sys

from workflow import ROOT, copy_workflow

SPEC = importlib.util.spec_from_file_location("check_lint", ROOT / "scripts" / "check_lint.py")
check_lint = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check_lint)

SAMPLE = """\
Lints for rule corpus (line 6, rules/base.smk):
    * Specify a conda environment or container for each rule.:
      This way, the used software for each specific step is documented.
    * Shell command directly uses variable PY from outside of the rule:
      It is recommended to pass all files as input and output.
Lints for rule archive (line 21, rules/archive.smk):
    * Shell command directly uses variable CHECKOUT from outside of the rule:
      It is recommended to pass all files as input and output.
    * No log directive defined:
      Without a log directive, all output will be printed to the terminal.
    * Shell command directly uses variable STUDY from outside of the rule:
      It is recommended to pass all files as input and output.
"""


def test_only_unaccepted_lints_are_reported():
    assert check_lint.unaccepted(SAMPLE) == [
        ("Lints for rule archive (line 21, rules/archive.smk)", "No log directive defined"),
        ("Lints for rule archive (line 21, rules/archive.smk)", "Shell command directly uses variable STUDY from outside of the rule"),
    ]


def test_the_workflow_has_no_unaccepted_lint(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    copy_workflow(tmp_path)
    done = subprocess.run([sys.executable, str(tmp_path / "scripts" / "check_lint.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 lint(s) beyond the accepted ones" in done.stderr
