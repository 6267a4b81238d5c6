"""What the machine offers, found without importing torch (planning stays fast)."""

import os
import shutil
import subprocess


def gpu_names(timeout_s: float = 10.0) -> list:
    """Names of the NVIDIA GPUs ``nvidia-smi -L`` lists; empty without a driver or a GPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return []
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        out = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    # lines look like "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"
    return [line.split(":", 1)[1].split("(UUID")[0].strip() for line in out.stdout.splitlines() if line.startswith("GPU ")]


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def gpu_driver(timeout_s: float = 10.0) -> str:
    """The NVIDIA driver version ``nvidia-smi`` reports, or "" without one."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return ""
    try:
        out = subprocess.run([binary, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = out.stdout.split() if out.returncode == 0 else []
    return lines[0] if lines else ""
