import json
import os
import subprocess
import sys
from argparse import Namespace

import pytest

from lorasweep.study import provenance
from lorasweep.study.config import config_hash
from lorasweep.errors import LorasweepError

CONFIG = {"mps": "auto", "training": {"target": 0.8}, "resolved": {"scale": "cpu", "device": "cpu", "gpus": []}}
NO_TORCH = {"version": None, "cuda": None, "cudnn": None}


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    # git must not find a repository above the test's folder, and torch is not imported
    # here (its own test below does): provenance's probes are what is under test
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setattr(provenance, "torch_build", lambda: dict(NO_TORCH))


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "code.py").write_text("x = 1\n")
    git(path, "add", "code.py")
    git(path, "commit", "-q", "-m", "first")
    return path


def head(repo) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def test_a_clean_checkout_records_its_commit_and_not_dirty(repo):
    prov = provenance.collect(CONFIG, workdir=repo)
    assert prov["git"] == {"commit": head(repo), "dirty": False}
    assert provenance.essentials(prov).startswith(f"code {head(repo)[:10]} ·")


def test_an_edited_checkout_is_dirty(repo):
    (repo / "code.py").write_text("x = 2\n")
    prov = provenance.collect(CONFIG, workdir=repo)
    assert prov["git"] == {"commit": head(repo), "dirty": True}
    assert f"code {head(repo)[:10]}+dirty ·" in provenance.essentials(prov)


def test_outside_a_repository_the_commit_is_unknown(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    prov = provenance.collect(CONFIG, workdir=plain)
    assert prov["git"] == {"commit": "unknown", "dirty": "unknown"}
    assert provenance.essentials(prov).startswith("code unknown ·")


def test_without_git_on_the_path_nothing_crashes(repo, monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert provenance.git_state(repo) == {"commit": "unknown", "dirty": "unknown"}


def test_the_record_holds_versions_hardware_and_the_config_hash(repo):
    prov = provenance.collect(CONFIG, workdir=repo, base_info={"source": "embedded", "weights_sha256": "ab" * 32})
    assert prov["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(prov["packages"]) == set(provenance.PACKAGES)
    assert prov["packages"]["snakemake"]  # installed in this project's venv
    assert prov["config_hash"] == config_hash(CONFIG)
    assert prov["device"] == "cpu" and prov["cpu_model"] and prov["hostname"]
    assert prov["base"]["weights_sha256"] == "ab" * 32
    json.dumps(prov)  # JSON-ready as it is


def test_a_missing_package_is_recorded_as_none():
    assert provenance.package_versions(["surely-not-installed-lorasweep-probe"]) == {
        "surely-not-installed-lorasweep-probe": None}


def test_torch_absent_is_tolerated(monkeypatch):
    monkeypatch.undo()  # the real torch_build, with torch made unimportable
    monkeypatch.setitem(sys.modules, "torch", None)
    assert provenance.torch_build() == NO_TORCH


def test_the_installed_torch_build_is_recorded(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.undo()
    build = provenance.torch_build()
    assert build["version"] == torch.__version__ and build["cuda"] == torch.version.cuda


def test_gpu_lines_from_nvidia_smi_are_parsed(monkeypatch, tmp_path):
    # a fake nvidia-smi on PATH that answers only the query provenance asks (through hardware)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text(
        '#!/bin/sh\n[ "$1 $2" = "--query-gpu=name,driver_version --format=csv,noheader" ] || exit 3\n'
        "printf 'NVIDIA H200, 550.54.15\\nNVIDIA H200, 550.54.15\\n'\n")
    (fake / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    on_gpu = {**CONFIG, "resolved": {"scale": "gpu", "device": "cuda", "gpus": ["NVIDIA H200"]}}
    prov = provenance.collect(on_gpu)
    assert prov["gpus"] == [{"name": "NVIDIA H200", "driver": "550.54.15"}] * 2
    assert (prov["device"], prov["driver"]) == ("NVIDIA H200", "550.54.15")
    assert provenance.essentials(prov).endswith("· torch not installed · NVIDIA H200 (driver 550.54.15)")


def test_the_command_writes_the_record_atomically(repo, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    out = tmp_path / "study" / "provenance.json"
    assert provenance.main(Namespace(config=str(config), base_info=None, out=str(out), workdir=str(repo))) == 0
    assert json.loads(out.read_text())["git"]["commit"] == head(repo)
    assert not list(out.parent.glob(".*.tmp"))


def test_an_unreadable_config_names_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("not json")
    with pytest.raises(LorasweepError, match=f"cannot read {bad} as JSON"):
        provenance.main(Namespace(config=str(bad), base_info=None, out=str(tmp_path / "p.json"), workdir="."))
