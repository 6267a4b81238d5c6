"""The device check's --cpu mode end to end: the same script the GPU runs, at tiny sizes."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_device_check_runs_on_the_cpu_and_writes_its_table(tmp_path):
    out = tmp_path / "check.md"
    # no time budget here: a slow CI machine should still run every part
    proc = subprocess.run([sys.executable, "scripts/device_check.py", "--cpu", "--out", str(out), "--budget-s", "3000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = out.read_text()
    assert proc.stdout.rstrip().endswith(text.rstrip())  # the table is printed last
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines()[2:]}
    assert list(rows) == ["device", "software", "pytest -m gpu", "worker bs 8 dropping", "worker bs 16 dropping",
                          "nvidia-cuda-mps-control", "cell n 1 (bs 8)", "cell n 2 (bs 8)", "fused cell n 1 (bs 8)",
                          "fused cell n 2 (bs 8)", "wall time"]
    # the gpu tests are collected and, without CUDA, skipped; none fails
    assert "skipped" in rows["pytest -m gpu"] and "failed" not in rows["pytest -m gpu"]
    for name in ("worker bs 8 dropping", "worker bs 16 dropping"):
        assert rows[name].endswith("tokens)") and " s/step (generate " in rows[name], rows[name]
    # bs 8 = 2 prompts x G 4, 8 new tokens: at most 64 completion tokens per step
    assert 0 < float(rows["worker bs 8 dropping"].split("; ")[-1].split()[0]) <= 64
    for name in ("cell n 1 (bs 8)", "cell n 2 (bs 8)"):
        assert "steps/s together" in rows[name] and "MPS off" in rows[name], rows[name]
    for name in ("fused cell n 1 (bs 8)", "fused cell n 2 (bs 8)"):
        assert "steps/s together" in rows[name] and "s/step for the pack" in rows[name], rows[name]
