"""The one-node SLURM cluster test (tests/slurm/run_slurm_test.sh), started in the background.

The script spends most of its two to three minutes waiting: on sbatch, on status
polls, on a job step starting Snakemake on the node. So when the session will run
its test, it starts as soon as collection ends (conftest.py) and runs alongside
the rest of the suite; the test in test_slurm.py then waits for its result.
LORASWEEP_SLURM_TEST picks the form: ``reduced`` (the tiny sweep cut to one cell),
``full`` (the whole tiny sweep) or ``0`` (skip; the default for a local ``make test``,
since it installs system packages and starts daemons). CI runs the reduced form.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workflow import ROOT

MODE = os.environ.get("LORASWEEP_SLURM_TEST", "0").strip().lower()
SCRIPT = ROOT / "tests/slurm/run_slurm_test.sh"
TEST_NAME = "test_the_tiny_sweep_on_a_one_node_slurm_cluster_matches_a_local_run"
TIMEOUT_S = 2400


def skip_reason() -> str:
    """Why the cluster test cannot run here, or '' when it can."""
    if MODE in ("0", "off", "no", "false"):
        return "LORASWEEP_SLURM_TEST=0"
    if os.geteuid() != 0:
        return "needs root: the script installs slurm-wlm and munge and starts their daemons"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "neither SLURM nor apt-get to install it"
    return ""


class Run:
    """The script running in its own process group; stdout and stderr go to files, not
    pipes, so that a long run can never block on a full pipe."""

    def __init__(self):
        self.form = "--full" if MODE == "full" else "--reduced"
        self.folder = Path(tempfile.mkdtemp(prefix="lorasweep-slurm-test-"))
        self.started = time.monotonic()
        with open(self.folder / "stdout", "w") as out, open(self.folder / "stderr", "w") as err:
            self.proc = subprocess.Popen(["bash", str(SCRIPT), self.form], cwd=ROOT, stdout=out, stderr=err,
                                         env={**os.environ, "PYTHON": sys.executable}, start_new_session=True)

    def output(self) -> tuple:
        return (self.folder / "stdout").read_text(errors="replace"), (self.folder / "stderr").read_text(errors="replace")

    def wait(self) -> int:
        """The script's exit status; past the time limit, it is stopped and TimeoutError raised."""
        try:
            return self.proc.wait(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"{SCRIPT.name} {self.form} ran past {TIMEOUT_S} s") from None

    def stop(self):
        """SIGTERM, not SIGKILL: the script's exit trap stops its workflow run (which cancels its
        SLURM jobs), then the daemons it started. Its captured output goes with it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_RUN = None


def start_if_selected(items) -> None:
    """Start the script when the cluster test is among the collected ``items`` and can run here."""
    global _RUN
    if _RUN is None and not skip_reason() and any(item.name == TEST_NAME for item in items):
        _RUN = Run()


def started():
    return _RUN


def stop():
    """At the session's end: a run still going is stopped; either way its output folder is removed."""
    if _RUN is not None:
        _RUN.stop()
