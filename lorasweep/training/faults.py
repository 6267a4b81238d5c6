"""Fault injection, for the failure tests only: make a real run fail on purpose.

The failure tests (tests/test_fail_*.py) set ``spec["fault"]``, or the JSON in
$LORASWEEP_FAULT (which reaches workers started by Snakemake); a run calls
``inject`` at fixed points of each step. Never set either in a real run.
"""

import json
import os
import signal

from ..errors import LorasweepError

# The failure tests make a real worker fail on purpose: spec["fault"], or the JSON in
# $LORASWEEP_FAULT (which reaches workers started by Snakemake), e.g.
#   {"kind": "kill", "step": 2, "seed": 1, "cell": "r4_bs8_lr4e-03_n2"}
# kind: kill (SIGKILL itself), raise (an exception), nan_loss, inf_loss, nan_grad, nan_reward;
# seed and cell are optional filters. Never set either in a real run.
FAULT_ENV = "LORASWEEP_FAULT"
FAULT_KINDS = ("kill", "raise", "nan_loss", "inf_loss", "nan_grad", "nan_reward")


def fault_for(spec: dict) -> dict:
    """The test-only fault aimed at this worker, or {}."""
    fault = spec.get("fault")
    if fault is None and os.environ.get(FAULT_ENV):
        fault = json.loads(os.environ[FAULT_ENV])
    if not fault:
        return {}
    if fault.get("kind") not in FAULT_KINDS:
        raise LorasweepError(f"{FAULT_ENV} / spec fault: kind {fault.get('kind')!r} is not one of {', '.join(FAULT_KINDS)}")
    if "seed" in fault and fault["seed"] != spec["seed"]:
        return {}
    if "cell" in fault and fault["cell"] != spec["cell"]["cell_id"]:
        return {}
    return fault


def inject(fault: dict, step: int, point: str, value=None):
    """Apply the fault if it is due at this point of this step; returns ``value``, changed or not."""
    if not fault or fault.get("step") != step:
        return value
    kind = fault["kind"]
    if point == "start" and kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "start" and kind == "raise":
        raise RuntimeError(f"injected fault at step {step} (test hook {FAULT_ENV})")
    if point == "reward" and kind == "nan_reward":
        value = value.clone()
        value[0] = float("nan")
    if point == "loss" and kind in ("nan_loss", "inf_loss"):
        value = value * float("nan") if kind == "nan_loss" else value + float("inf")
    if point == "grad" and kind == "nan_grad":
        next(p for p in value if p.grad is not None).grad.view(-1)[0] = float("nan")
    return value
