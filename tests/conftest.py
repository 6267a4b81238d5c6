import pytest

# lorasweep is the installed package (make installs it in editable mode); the helper
# module tests/workflow.py is importable through `pythonpath = tests` in pytest.ini
from workflow import copy_workflow, snakemake


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The whole pipeline run once at the tiny scale of tests/data/tiny.yaml (about 2 minutes).

    Tests that need a finished study read it, or copy it before changing anything.
    """
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_study"))
    snakemake(workdir, "--configfile", "tests/data/tiny.yaml")
    return workdir
