"""What produced a study's numbers: code, packages, torch build, hardware, config.

``collect`` gathers it into one JSON-ready dict; ``essentials`` shortens it to the
line a table header shows. Every probe tolerates its tool being absent (no git, no
torch, no nvidia-smi): provenance describes the machine, it must never stop a run.
The GPUs are asked of ``hardware``, which owns every question to nvidia-smi.
torch is imported only inside ``torch_build``, so that the rest stays fast.
"""

import importlib.metadata
import json
import platform
import shutil
import socket
import subprocess
from pathlib import Path

from .. import atomic
from .. import hardware
from .config import config_hash
from ..errors import LorasweepError

UNKNOWN = "unknown"
PACKAGES = ("torch", "transformers", "peft", "tokenizers", "snakemake", "pandas")
# the base-model facts a reader needs to trace a number back to its weights and prompts
BASE_KEYS = ("source", "model_label", "model_dir", "weights_sha256", "prompt_source", "num_prompts")


def _run(command, cwd=None, timeout_s: float = 10.0):
    """stdout of a command, or None when it is missing, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(workdir=".") -> dict:
    """Commit of the checkout and whether it differs from that commit; "unknown" outside git."""
    commit = _run(["git", "rev-parse", "HEAD"], cwd=workdir)
    status = _run(["git", "status", "--porcelain"], cwd=workdir) if commit else None
    if commit is None or status is None:
        return {"commit": UNKNOWN, "dirty": UNKNOWN}
    return {"commit": commit.strip(), "dirty": bool(status.strip())}


def package_versions(names=PACKAGES) -> dict:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def torch_build() -> dict:
    """The torch actually importable here, with the CUDA and cuDNN it was built against."""
    try:
        import torch
    except ImportError:
        return {"version": None, "cuda": None, "cudnn": None}
    try:
        cudnn = torch.backends.cudnn.version()
    except Exception:  # an odd build must not stop provenance
        cudnn = None
    return {"version": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn}


def collect(resolved_config: dict, workdir=".", base_info: dict = None) -> dict:
    """Provenance of a study run from ``workdir`` with this resolved config."""
    resolved = resolved_config.get("resolved", {})
    found_gpus = hardware.gpus()
    on_gpu = bool(found_gpus) and resolved.get("device", "cuda") == "cuda"
    prov = {
        "git": git_state(workdir),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "torch_build": torch_build(),
        # the device the study ran on: the first GPU on the gpu scale, else "cpu"
        "device": found_gpus[0]["name"] if on_gpu else "cpu",
        "driver": found_gpus[0]["driver"] if on_gpu else None,
        "gpus": found_gpus,
        "mps": resolved_config.get("mps"),
        "cpu_model": hardware.cpu_model(),
        "cpu_cores": hardware.cpu_count(),
        "hostname": socket.gethostname(),
        "scale": resolved.get("scale"),
        "config_hash": config_hash(resolved_config),
    }
    if base_info is not None:
        prov["base"] = {key: base_info.get(key) for key in BASE_KEYS}
    return prov


def essentials(prov: dict) -> str:
    """One short line for table headers: code commit, torch, device."""
    git = prov.get("git", {})
    commit = git.get("commit", UNKNOWN)
    code = commit[:10] if commit != UNKNOWN else UNKNOWN
    if git.get("dirty") is True:
        code += "+dirty"
    torch_version = (prov.get("torch_build") or {}).get("version") or "not installed"
    if prov.get("device", "cpu") == "cpu":
        device = f"cpu ({prov.get('cpu_model', UNKNOWN)})"
    else:
        device = f"{prov['device']} (driver {prov.get('driver') or UNKNOWN})"
    return f"code {code} · torch {torch_version} · {device}"


def _read_json(path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LorasweepError(f"cannot read {path} as JSON: {error}") from None


def main(args) -> int:
    """``provenance --config <resolved config.json> [--base-info base.json] --out <json>``."""
    config = _read_json(args.config)
    base_info = _read_json(args.base_info) if getattr(args, "base_info", None) else None
    prov = collect(config, workdir=getattr(args, "workdir", "."), base_info=base_info)
    atomic.write_json(args.out, prov)
    print(f"wrote {args.out}: {essentials(prov)}", flush=True)
    return 0
