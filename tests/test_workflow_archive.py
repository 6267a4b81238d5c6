"""`snakemake --archive` on a fresh clone packs the workflow, without conda.

The clone is of the commit checked out here (HEAD), so this checks what a person who
clones the repository gets: uncommitted edits are not part of it.
"""

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from workflow import ROOT, snakemake


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_archive_of_a_fresh_clone_holds_every_tracked_file(tmp_path, monkeypatch):
    try:
        head = git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"{ROOT} is not a git checkout with a commit: nothing to clone")
    clone = tmp_path / "clone"
    git("clone", "--quiet", "--no-checkout", str(ROOT), str(clone), cwd=tmp_path)
    git("fetch", "--quiet", str(ROOT), head, cwd=clone)
    git("checkout", "--quiet", "--detach", head, cwd=clone)
    tracked = set(git("ls-files", cwd=clone).split("\n")) - {""}

    # planning only: no hub probe, the CPU scale whatever the machine has
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = snakemake(clone, "--config", "scale=cpu", "--archive", "wf.tar.gz", timeout=300)
    assert "Error running conda info" not in out.stdout + out.stderr

    with tarfile.open(clone / "wf.tar.gz") as archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}
        snakefile = archive.extractfile(members["Snakefile"]).read()
    workflow_files = {"Snakefile", "config.yaml", "schemas/config.schema.yaml"}
    workflow_files |= {p for p in tracked if p.startswith("rules/") and p.endswith(".smk")}
    workflow_files |= {p for p in tracked if p.startswith("lorasweep/") and p.endswith(".py")}
    assert len([p for p in workflow_files if p.startswith("rules/")]) >= 5
    assert "lorasweep/__main__.py" in workflow_files
    assert workflow_files <= tracked
    assert sorted(tracked - set(members)) == []
    assert snakefile == (clone / "Snakefile").read_bytes()
    assert not any(os.path.isabs(name) or name.startswith("..") for name in members)
