"""Mistakes caught before any job starts (issue 6, cases 1, 6 and 8), through a real
``snakemake --dry-run``: one message naming the key, the value and what is allowed,
no traceback, exit status 1, and nothing written under results/.
"""

import os
import socket

import pytest

from lorasweep.study.config import load_schema
from workflow import copy_workflow, snakemake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("fail_config"))


def dry_run_fails(workdir, *args) -> str:
    out = snakemake(workdir, "--dry-run", *args, check=False, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text
    assert not (workdir / "results").exists()
    return text


def the_one_error(text: str) -> str:
    errors = [line for line in text.splitlines() if "error:" in line]
    assert len(errors) == 1, text
    return errors[0]


@pytest.mark.parametrize(
    "override, message",
    [
        # duplicate levels
        ("concurrency={settings: [{batch_size: 16, lr: 1.0e-3, levels: [1, 2, 2]}]}",
         "config key 'concurrency.settings[0].levels': value [1, 2, 2] is not allowed; "
         "expected a list without duplicates (2 more than once)"),
        # the same cell twice across settings
        ("concurrency={settings: [{batch_size: 16, lr: 1.0e-3, levels: [1, 2]}, {batch_size: 16, lr: 1.0e-3, levels: [2, 4]}]}",
         "config key 'concurrency.settings[1].levels': value [2, 4] is not allowed; expected levels not already "
         "listed for batch_size 16, lr 1e-3 (level 2 is in concurrency.settings[0] too)"),
        # wrong type
        ("lr_scaling={n: two}",
         "config key 'lr_scaling.n': value 'two' is not allowed; expected a positive integer or a mapping"),
        # empty list
        ("lr_scaling={batch_sizes: []}",
         "config key 'lr_scaling.batch_sizes': value [] is not allowed; expected a list of at least 1 item(s)"),
        # a misspelt top-level key: one line, not the whole resolved config
        ("trainning={max_steps: 10}",
         "config key 'trainning' (did you mean 'training'?) is unknown; allowed keys at the top level: "
         + ", ".join(sorted(load_schema()["properties"]))),
        # a misspelt nested key
        ("training={targt: 0.5}",
         "config key 'training.targt' (did you mean 'training.target'?) is unknown; allowed keys in 'training': "
         + ", ".join(sorted(load_schema()["properties"]["training"]["properties"]))),
    ],
)
def test_a_bad_value_is_one_message_before_any_job(workdir, monkeypatch, override, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = dry_run_fails(workdir, "--config", override)
    assert the_one_error(text) == f"lorasweep: error: {message}"


def test_a_forced_hub_base_without_a_hub_names_the_model_and_the_embedded_default(workdir, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port where nothing listens: the hub is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "empty-cache"),
           "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    text = dry_run_fails(workdir, "--config", "base={source: hub}")
    error = the_one_error(text)
    assert error.startswith("lorasweep: error: base model SimpleStories/SimpleStories-1.25M is not available from the hub")
    assert f"127.0.0.1:{port}" in error
    assert "Set base.source: embedded (or pass --config base='{source: embedded}') to use the embedded default" in error


def test_more_workers_than_mps_clients_are_rejected_on_a_gpu_before_any_job(workdir, tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-fake)'\n")
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")  # a GPU, as nvidia-smi -L says
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = dry_run_fails(workdir, "--config", "concurrency={settings: [{batch_size: 128, lr: 1.2e-3, levels: [12, 64]}]}")
    assert the_one_error(text) == (
        "lorasweep: error: config key 'concurrency.settings[0].levels': value 64 is not allowed; expected at most 48 "
        "concurrent workers, the MPS client limit of one GPU"
    )
