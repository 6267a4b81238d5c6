import os
import socket
import tempfile

import pytest

# lorasweep is the installed package (make installs it in editable mode); the helper
# module tests/workflow.py is importable through `pythonpath = tests` in pytest.ini
from workflow import copy_workflow, snakemake

# The tiny study plans with base.source auto, as a user's would. So that every machine
# gets the same answer, at once, the hub probe of every workflow the tests run goes to a
# loopback port that refuses (a socket bound for the session, never listening), and the
# Hugging Face cache is an empty folder.
_REFUSING = socket.socket()
_REFUSING.bind(("127.0.0.1", 0))
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_REFUSING.getsockname()[1]}"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="lorasweep-test-hf-")


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The whole pipeline run once at the tiny scale of tests/data/tiny.yaml (about 2 minutes).

    Tests that need a finished study read it, or copy it before changing anything.
    """
    workdir = copy_workflow(tmp_path_factory.mktemp("tiny_study"))
    snakemake(workdir, "--configfile", "tests/data/tiny.yaml")
    return workdir


@pytest.fixture
def torch_settings():
    """train() sets torch's thread count and determinism for its process; give them back."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def pytest_collection_finish(session):
    """The SLURM cluster test mostly waits on its cluster: start it now, alongside the suite."""
    import slurm_cluster

    if not session.config.option.collectonly:
        slurm_cluster.start_if_selected(session.items)


def pytest_sessionfinish(session, exitstatus):
    import slurm_cluster

    slurm_cluster.stop()  # a no-op once its test has collected the result
