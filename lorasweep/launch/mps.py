"""NVIDIA MPS lifecycle for one cell job: start, verify the workers joined, always stop.

Each cell job runs its own MPS control daemon with a private pipe and log folder
inside the job's folder, so concurrent jobs (or a system-wide daemon) never share
one, and everything the daemon logs stays with the job that caused it.

    with MpsDaemon(job_dir, mode) as mps:          # outermost: quit comes last
        env = mps.worker_env(os.environ)
        ... start the n workers with env ...         # inner with-block kills them on exit
        mps.verify_clients(worker_pids, timeout_s=60)
        ... wait for the workers ...
    record = mps.record()

The daemon is stopped (``quit``) when the block ends normally, when it ends with
an exception (a worker failed), and when the process receives SIGTERM (Snakemake
cancelling the job). Signals are handled by ``lorasweep.launch.supervise``'s one layer
per process: the daemon joins the launcher's layer when there is one, and
installs one for SIGTERM otherwise. The signal is raised once, as
``supervise.Terminated`` (exit status 128 + signal), so the with-blocks unwind
in order, the workers are stopped first and the daemon quit last. That order
matters: ``quit`` waits for live clients to finish. A signal that arrives while
``quit`` is being sent is held until it is done. A daemon that does not go
away within the bound is terminated through its pid file. Only SIGKILL can
leave a daemon behind; the next attempt of the same job finds it in its pipe
folder and quits it before starting a new one.

Modes (config key ``mps``): ``auto`` uses MPS where the control binary and a GPU
exist and records why not otherwise; ``required`` raises instead; ``off`` never
starts a daemon.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .. import hardware
from . import supervise
from ..study.cellspec import MPS_MODES as MODES  # the cell spec owns the setting's values
from ..errors import LorasweepError, output_tail as _tail

CONTROL_BINARY = "nvidia-cuda-mps-control"
PIPE_VAR = "CUDA_MPS_PIPE_DIRECTORY"
LOG_VAR = "CUDA_MPS_LOG_DIRECTORY"

# The daemon listens on the socket <pipe dir>/control, and an AF_UNIX path holds
# at most 107 bytes. Past that the daemon fails to bind and the only symptom is
# "Cannot find MPS control daemon process", so a long job folder gets a short
# private pipe folder under the temp dir instead (recorded).
MAX_PIPE_DIR_BYTES = 90

# What the control client prints when no daemon listens on its pipe folder (some
# versions exit 0 while printing it).
NO_DAEMON_MARKER = "cannot find mps control daemon"

POLL_S = 0.1


class MpsDaemon:
    """One MPS control daemon for one cell job; see the module docstring.

    ``state`` tells how the workers run: "running" (a daemon of ours served
    them), "off" (mode off), "unavailable" (no control binary or no GPU),
    "failed" (auto mode and the daemon would not start). Whether the daemon was
    stopped afterwards is recorded separately, under ``stop``.
    """

    def __init__(
        self,
        job_dir: Path,
        mode: str,
        *,
        start_timeout_s: float = 30.0,
        command_timeout_s: float = 10.0,
        stop_timeout_s: float = 30.0,
        handle_sigterm: bool = True,
        log_dir: Path | None = None,
        off_reason: str = "mps: off in the config",
    ):
        if mode not in MODES:
            raise LorasweepError(f"mps: {mode!r} is not one of {', '.join(MODES)}")
        self.job_dir = Path(job_dir)
        self.mode = mode
        self.state = "not started"
        self.reason = None
        self.off_reason = off_reason
        self.pipe_dir = self.job_dir / "mps" / "pipe"
        # The daemon's control.log and server.log; a launcher that deletes its
        # scratch folder afterwards passes a folder that is kept.
        self.log_dir = Path(log_dir) if log_dir is not None else self.job_dir / "mps" / "log"
        self.env: dict[str, str] = {}
        self.start_timeout_s = start_timeout_s
        self.command_timeout_s = command_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.handle_sigterm = handle_sigterm
        self._control = None
        self._gpus: list[str] = []
        self._short_pipe_dir = False
        self._isolated = False
        self._stale = None
        self._start = None
        self._verification = None
        self._stop = None
        self._started = False  # a daemon of ours may be up: stop() must quit it
        self._stopped = False
        self._stopping = False
        self._signal = None
        self._signals = None  # the process's stop-signal layer, while this daemon is in it

    # ---- context manager ------------------------------------------------------------

    def __enter__(self):
        if self.handle_sigterm and self.mode != "off":
            # Entered before start(): a SIGTERM while the daemon is coming up
            # must also unwind through stop().
            self._signals = supervise.stop_signals((signal.SIGTERM,))
            self._signals.__enter__()
        try:
            self.start()
        except BaseException:
            self._stop_and_restore()
            raise
        if self.state != "running":
            self._restore_handlers()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop_and_restore()
        return False

    def _stop_and_restore(self):
        try:
            self.stop()
        finally:
            self._restore_handlers()

    def _restore_handlers(self):
        if self._signals is not None:
            self._signals.__exit__(None, None, None)
            self._signals = None

    # ---- start --------------------------------------------------------------------------

    def start(self) -> None:
        if self.mode == "off":
            self.state, self.reason = "off", self.off_reason
            self._isolate()
            return
        self._control = shutil.which(CONTROL_BINARY)
        if self._control is None:
            self._unavailable(f"{CONTROL_BINARY} was not found on PATH", isolate=True)
            return
        gpu_problem = self._find_gpus()
        if gpu_problem:
            self._unavailable(gpu_problem, isolate=False)
            return
        self._prepare_dirs()
        self._quit_stale_daemon()
        try:
            self._launch()
        except _StartFailed as failure:
            self._fail(str(failure))
            return
        self.state, self.reason = "running", None
        self.env = self._mps_env()

    def _find_gpus(self):
        """None when ``nvidia-smi -L`` lists a GPU, otherwise why not."""
        self._gpus, problem = hardware.gpu_list(self.command_timeout_s)
        return problem

    def _prepare_dirs(self):
        for folder in (self.pipe_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
            # Private: whoever can write the pipe folder can talk to the daemon.
            folder.chmod(0o700)
        if len(os.fsencode(self.pipe_dir.resolve())) > MAX_PIPE_DIR_BYTES:
            self.pipe_dir = Path(tempfile.mkdtemp(prefix="lorasweep-mps-"))
            self._short_pipe_dir = True

    def _quit_stale_daemon(self):
        # The pipe folder is this job's own, so a daemon answering there is left
        # over from an earlier attempt that was killed outright (SIGKILL).
        if self._daemon_answers():
            self._stale = self._quit()

    def _launch(self):
        started = time.monotonic()
        out_path = self.log_dir / "lorasweep-start.out"
        try:
            # Output to a file, not a pipe: the daemon forks and could keep a pipe
            # open, and run() would then wait for it until the timeout.
            with open(out_path, "w") as out:
                done = subprocess.run(
                    [self._control, "-d"],
                    env=self._control_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=self.start_timeout_s,
                )
        except subprocess.TimeoutExpired:
            self._started = True  # it may have come up after all
            raise _StartFailed(f"{CONTROL_BINARY} -d did not return within {self.start_timeout_s:g} s")
        except OSError as error:
            raise _StartFailed(f"{CONTROL_BINARY} -d could not run: {error}")
        output = out_path.read_text(errors="replace")
        if done.returncode != 0:
            raise _StartFailed(f"{CONTROL_BINARY} -d failed (exit {done.returncode}): {_tail(output)}")
        self._started = True
        deadline = started + self.start_timeout_s
        while not self._daemon_answers():
            if time.monotonic() >= deadline:
                raise _StartFailed(
                    f"the MPS control daemon did not answer within {self.start_timeout_s:g} s; "
                    f"see {self.log_dir / 'control.log'}"
                )
            time.sleep(POLL_S)
        self._start = {"seconds": round(time.monotonic() - started, 3), "output": _tail(output)}

    def _unavailable(self, reason: str, isolate: bool):
        if self.mode == "required":
            self.state, self.reason = "unavailable", reason
            raise LorasweepError(f"mps: required, but {reason}; set mps: auto or off to run without MPS")
        self.state, self.reason = "unavailable", reason
        if isolate:
            # A GPU may still be there, and with it a system-wide daemon.
            self._isolate()

    def _fail(self, reason: str):
        self.state, self.reason = "failed", reason
        if self._started:
            self.stop()
        if self.mode == "required":
            raise LorasweepError(f"mps: required, but {reason} (pipe folder {self.pipe_dir})")
        self._isolate()

    def _isolate(self):
        # Without MPS the workers must not join some other daemon by accident
        # (a system-wide one in /tmp/nvidia-mps would take them silently): point
        # them at an empty private pipe folder, where the CUDA runtime finds no
        # daemon and runs them without MPS. (A socket path too long to bind does
        # not matter here: nothing listens.)
        self.pipe_dir = self.job_dir / "mps" / "pipe"
        self.pipe_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = self._mps_env()
        self._isolated = True

    # ---- workers ------------------------------------------------------------------------

    def worker_env(self, base_env=None) -> dict:
        """The environment for the workers: ``base_env`` (default os.environ) plus the MPS folders."""
        env = dict(os.environ if base_env is None else base_env)
        env.update(self.env)
        return env

    def verify_clients(self, pids, timeout_s: float = 30.0) -> dict:
        """Check with the daemon that every worker pid is one of its clients.

        A worker that cannot reach the daemon falls back to running without MPS
        and says nothing, so a running daemon proves nothing: ask it for its
        servers and their clients. Workers join when they initialise CUDA, so
        this polls until all are listed or ``timeout_s`` passes; call it while
        the workers are alive (a finished worker is no longer a client). The pids
        must be those of the processes that open CUDA, as the daemon sees them
        (the same pid namespace).
        """
        expected = sorted({int(pid) for pid in pids})
        if self.state != "running":
            self._verification = {"checked": False, "expected": expected, "reason": f"MPS {self.state}: {self.reason}"}
            return self._verification
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            servers, clients, problem = self._list_clients()
            missing = [pid for pid in expected if pid not in clients]
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        self._verification = {
            "checked": True,
            "ok": not missing,
            "expected": expected,
            "servers": servers,
            "clients": sorted(clients),
            "missing": missing,
            "seconds": round(time.monotonic() - started, 3),
        }
        if problem:
            self._verification["problem"] = problem
        if missing and self.mode == "required":
            raise LorasweepError(
                f"mps: required, but worker process(es) {missing} are not clients of the MPS daemon in "
                f"{self.pipe_dir} after {timeout_s:g} s (servers {servers}, clients {sorted(clients)}"
                f"{'; ' + problem if problem else ''}); they would run without MPS. "
                f"See {self.log_dir / 'control.log'}"
            )
        return self._verification

    def _list_clients(self):
        rc, out, err = self._query("get_server_list")
        if not _answered(rc, out, err):
            return [], set(), f"get_server_list: {_tail(err or out) or 'no answer'}"
        servers = _pids(out)
        clients, problem = set(), None
        for server in servers:
            rc, out, err = self._query(f"get_client_list {server}")
            if _answered(rc, out, err):
                clients.update(_pids(out))
            else:
                problem = f"get_client_list {server}: {_tail(err or out) or 'no answer'}"
        return servers, clients, problem

    # ---- stop ---------------------------------------------------------------------------

    def stop(self):
        """Quit the daemon if one of ours may be up; safe to call more than once."""
        if self._stopped or self._stopping:
            return self._stop
        if not self._started:
            self._stopped = True
            return None
        self._stopping = True
        # a signal that arrives while quitting is held back until the quit is done, then raised
        with self._signals.held() if self._signals is not None else contextlib.nullcontext():
            try:
                self._stop = self._quit()
            finally:
                self._stopping = False
                self._stopped = True
                if self._signals is not None:
                    self._signal = self._signals.received
                if self._short_pipe_dir:
                    shutil.rmtree(self.pipe_dir, ignore_errors=True)
        return self._stop

    def _quit(self) -> dict:
        started = time.monotonic()
        deadline = started + self.stop_timeout_s
        rc, out, err = self._query("quit")
        result = {"quit_sent": True, "quit_exit": rc, "quit_output": _tail(out + err)}
        gone = self._wait_gone(deadline)
        if not gone:
            result["terminated_by_pid"] = self._terminate_by_pid()
            gone = self._wait_gone(time.monotonic() + self.command_timeout_s)
        result["stopped"] = gone
        result["seconds"] = round(time.monotonic() - started, 3)
        return result

    def _wait_gone(self, deadline: float) -> bool:
        while self._daemon_answers():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    def _terminate_by_pid(self):
        # Last resort when quit did not work: the daemon writes its pid next to
        # its socket. Only a live process named like the control daemon is hit.
        pid_file = self.pipe_dir / "nvidia-cuda-mps-control.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _is_control_daemon(pid):
            return None
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return None
        return pid

    # ---- control client -----------------------------------------------------------------

    def _daemon_answers(self) -> bool:
        return _answered(*self._query("get_server_list"))

    def _query(self, command: str):
        """Send one command as ``echo command | nvidia-cuda-mps-control``: (exit, stdout, stderr)."""
        try:
            done = subprocess.run(
                [self._control],
                input=command + "\n",
                env=self._control_env(),
                capture_output=True,
                text=True,
                timeout=self.command_timeout_s,
            )
        except subprocess.TimeoutExpired:
            return None, "", f"no answer within {self.command_timeout_s:g} s"
        except OSError as error:
            return None, "", str(error)
        return done.returncode, done.stdout, done.stderr

    def _mps_env(self) -> dict:
        return {PIPE_VAR: str(self.pipe_dir), LOG_VAR: str(self.log_dir)}

    def _control_env(self) -> dict:
        env = dict(os.environ)
        env.update(self._mps_env())
        return env

    # ---- record -------------------------------------------------------------------------

    def record(self) -> dict:
        """What happened, for the cell's results: mode, state, reason, folders, checks."""
        return {
            "mode": self.mode,
            "state": self.state,
            "reason": self.reason,
            "pipe_dir": str(self.pipe_dir) if self.env else None,
            "log_dir": str(self.log_dir) if self.env else None,
            "short_pipe_dir": self._short_pipe_dir,
            "isolated_from_other_daemons": self._isolated,
            "control_binary": self._control,
            "gpus": self._gpus,
            "stale_daemon": self._stale,
            "start": self._start,
            "verification": self._verification,
            "stop": self._stop,
            "signal": signal.Signals(self._signal).name if self._signal else None,
        }


class _StartFailed(Exception):
    pass


def _answered(rc, out: str, err: str) -> bool:
    return rc == 0 and NO_DAEMON_MARKER not in f"{out}\n{err}".lower()


def _pids(text: str) -> list[int]:
    return [int(line.strip()) for line in text.splitlines() if line.strip().isdigit()]


def _is_control_daemon(pid: int) -> bool:
    stat = supervise.proc_stat(pid)
    if stat is None:
        return False
    comm, state = stat[0], stat[1]
    # comm holds at most 15 characters: "nvidia-cuda-mps" for the daemon.
    return CONTROL_BINARY.startswith(comm) and len(comm) >= 10 and state not in ("Z", "X")
