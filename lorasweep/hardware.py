"""What the machine offers, found without importing torch (planning stays fast).

Every question to ``nvidia-smi`` is asked here, one function per question, so that
its output is parsed in one place.
"""

import os
import shutil
import subprocess

from .errors import output_tail

SMI = "nvidia-smi"


def _nvidia_smi(args: list, timeout_s: float):
    """(stdout, None) of ``nvidia-smi <args>``, or (None, why it gave no answer)."""
    binary = shutil.which(SMI)
    if binary is None:
        return None, f"{SMI} was not found on PATH, so no GPU could be confirmed"
    command = " ".join([SMI, *args])
    try:
        done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"{command} did not answer within {timeout_s:g} s"
    except OSError as error:
        return None, f"{command} could not run: {error}"
    if done.returncode != 0:
        return None, f"{command} failed (exit {done.returncode}): {output_tail(done.stderr or done.stdout)}"
    return done.stdout, None


def gpu_list(timeout_s: float = 10.0):
    """(the lines ``nvidia-smi -L`` prints for the GPUs, None), or ([], why no GPU is confirmed).

    Whatever CUDA_VISIBLE_DEVICES says: this asks what the machine has (an MPS
    daemon serves the machine's GPUs), not what this process may use.
    """
    out, problem = _nvidia_smi(["-L"], timeout_s)
    if problem:
        return [], problem
    # lines look like "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"; MIG devices are indented under them
    lines = [line.strip() for line in out.splitlines() if line.startswith("GPU ")]
    return lines, None if lines else f"{SMI} -L lists no GPU"


def gpu_names(timeout_s: float = 10.0) -> list:
    """Names of the NVIDIA GPUs this process may use; empty without a driver or a GPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return []
    lines, _problem = gpu_list(timeout_s)
    return [line.split(":", 1)[1].split("(UUID")[0].strip() for line in lines]


def gpus(timeout_s: float = 10.0) -> list:
    """[{name, driver}] of every GPU ``nvidia-smi`` lists; empty without a driver or a GPU."""
    out, _problem = _nvidia_smi(["--query-gpu=name,driver_version", "--format=csv,noheader"], timeout_s)
    found = []
    for line in (out or "").splitlines():
        if line.strip():
            # the name may hold a comma, the driver version does not
            name, _, driver = line.rpartition(",")
            found.append({"name": name.strip(), "driver": driver.strip()})
    return found


def gpu_driver(timeout_s: float = 10.0) -> str:
    """The NVIDIA driver version ``nvidia-smi`` reports, or "" without one."""
    found = gpus(timeout_s)
    return found[0]["driver"] if found else ""


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
