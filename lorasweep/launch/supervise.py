"""Child processes and stop signals: the one place that starts, watches, stops and reaps.

The cell launcher (``lorasweep.launch.cell``) and the MPS daemon manager (``lorasweep.launch.mps``)
both rely on it, so that a stop signal to a cell job is handled by one layer and
its clean-up runs once, in order: the workers first, then the MPS daemon.

- ``start``: a child in its own session (hence its own process group), so that a
  Ctrl-C in the terminal reaches only this process, which stops the children in
  order; on Linux the child also dies when this process does, whatever kills it
  (``PR_SET_PDEATHSIG``), so no child outlives its parent.
- ``stop``: SIGTERM to each child's process group, a grace period, SIGKILL to
  whatever is left, and every child reaped.
- ``owners``/``gone_owner``: the process that started us, watched, so that work
  nobody waits for any more is stopped.
- ``StopSignals``: SIGTERM, SIGINT and SIGHUP turned into ``Terminated``, raised
  once, so that every ``finally`` and ``__exit__`` runs.
- ``describe_exit``: a child's exit status in words.
"""

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time

STOP_GRACE_S = 5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Wrappers between this process and the one that really owns the job (Snakemake runs
# shell rules through "bash -c"): they are watched, and so is the first ancestor
# above them that is not one of them.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox"})
PR_SET_PDEATHSIG = 1


# ---- /proc ---------------------------------------------------------------------------------


def proc_stat(pid: int):
    """(comm, state, ppid, start time) of a process from /proc, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    # comm sits in parentheses and may itself hold spaces and parentheses
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, fields[0], int(fields[1]), fields[19]


def running(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped) counts as gone."""
    stat = proc_stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


# ---- starting and stopping children --------------------------------------------------------


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with(parent_pid: int):
    """A preexec_fn that makes the child die when its parent does (Linux), whatever kills the parent."""
    prctl = _load_prctl()  # looked up before fork; the child only calls it
    if prctl is None:
        return None

    def preexec():
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def start(argv, *, stdout, env=None) -> subprocess.Popen:
    """Start ``argv`` in its own session, output (both streams) to ``stdout``, no input.

    Its own session: a Ctrl-C reaches only this process, which stops the child in
    order. It dies with this process (Linux), so it never outlives it.
    """
    return subprocess.Popen(
        argv, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True, preexec_fn=_die_with(os.getpid()),
    )


def _signal_group(proc: subprocess.Popen, signum: int):
    # A child started by ``start`` leads its own process group, whose id is its pid:
    # the signal reaches whatever the child started too. Sent only for a child that
    # was not reaped before ``stop`` began: until then its pid cannot be another's.
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def stop(procs, grace_s: float = STOP_GRACE_S):
    """SIGTERM every child's process group, SIGKILL what outlives ``grace_s``, reap every child.

    ``procs``: children from ``start``. Safe to call again; children already reaped
    are left alone.
    """
    live = [proc for proc in procs if proc.returncode is None]
    for proc in live:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in live:
        # also the group's members that outlived its leader (a child that ignored SIGTERM);
        # the leader was reaped only moments ago, and pids are not handed out again that soon
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def describe_exit(code: int) -> str:
    """A child's exit status (``Popen.returncode``: negative for a signal) in words."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"killed by signal {-code}"
        if -code == signal.SIGKILL:
            return f"killed by signal {name}; the kernel's out-of-memory killer sends it too"
        return f"killed by signal {name}"
    return f"exit status {code}"


# ---- the process that started us -----------------------------------------------------------


def owners() -> list:
    """The processes whose death means nobody waits for this one any more.

    The parent; if it is a shell (Snakemake's "bash -c"), also its parent, and so
    on up to the first process that is not a shell. Each as (pid, start time).
    """
    pid, found = os.getppid(), []
    while pid > 1 and len(found) < 8:
        stat = proc_stat(pid)
        if stat is None:
            if not found:
                found.append((pid, None))  # no /proc: watch the parent through getppid()
            break
        comm, _state, ppid, started = stat
        found.append((pid, started))
        if comm not in SHELLS:
            break
        pid = ppid
    return found


def gone_owner(watched: list):
    """The first of ``owners()`` that no longer runs (dead, a zombie, or its pid reused), else None."""
    for index, (pid, started) in enumerate(watched):
        if index == 0 and os.getppid() != pid:
            return pid
        if started is None:
            continue
        stat = proc_stat(pid)
        if stat is None or stat[1] in ("Z", "X") or stat[3] != started:
            return pid
    return None


# ---- stop signals --------------------------------------------------------------------------


class Terminated(SystemExit):
    """A stop signal, raised in the main thread so that every ``finally`` and ``__exit__`` runs.

    A SystemExit with status 128 + signal: uncaught, the process exits with the
    status a shell reports for a process that signal ended.
    """

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


_installed = None  # the StopSignals whose handlers this process runs, if any


def stop_signals(signals=STOP_SIGNALS) -> "StopSignals":
    """The layer already installed in this process, or a new one for ``signals``.

    A part that must clean up on a stop signal (the MPS daemon) joins the layer of
    the code that runs it (the cell launcher) instead of stacking handlers on it.
    """
    return _installed if _installed is not None else StopSignals(signals)


class StopSignals:
    """Turn ``signals`` into ``Terminated`` while the with-block runs.

    Only the first signal counts, and it is raised once: one that arrives while
    the first unwinds is ignored. Inside ``held()`` a signal is raised only on
    leaving it (a child is never half-started, unknown to us). Once
    ``cleaning_up`` is set, a signal is only recorded (``received``): the clean-up
    finishes and its owner decides. A Python handler that was installed before
    (not the interpreter's own Ctrl-C handler) is called first; what it raises
    unwinds instead of ``Terminated``. Entering again (nesting) is allowed; the
    handlers are restored when the outermost block ends. Only the main thread can
    install handlers; elsewhere nothing is installed and nothing is raised.
    """

    def __init__(self, signals=STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received = None
        self.cleaning_up = False
        self._raised = False
        self._holding = 0
        self._depth = 0
        self._previous = {}
        self._outer = None

    def __enter__(self):
        global _installed
        if self._depth == 0 and threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handler) for signum in self.signals}
            self._outer, _installed = _installed, self
        self._depth += 1
        return self

    def __exit__(self, *exc):
        global _installed
        self._depth -= 1
        if self._depth == 0 and self._previous:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            self._previous = {}
            _installed, self._outer = self._outer, None
        return False

    def _handler(self, signum, frame):
        if self.received is not None:
            return
        self.received = signum
        if not self.cleaning_up and not self._holding:
            self._raise(frame)

    def _raise(self, frame=None):
        self._raised = True
        previous = self._previous.get(self.received)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(self.received, frame)
        raise Terminated(self.received)

    @contextlib.contextmanager
    def held(self):
        """A signal that arrives inside is raised on leaving (unless clean-up began meanwhile)."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if self.received is not None and not self._raised and not self.cleaning_up and not self._holding:
            self._raise()
