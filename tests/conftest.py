import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workflow import copy_workflow, snakemake  # noqa: E402


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The whole pipeline run once at the tiny scale of tests/data/tiny.yaml (about 2 minutes).

    Tests that need a finished study read it, or copy it before changing anything.
    """
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_study"))
    snakemake(workdir, "--configfile", "tests/data/tiny.yaml")
    return workdir
