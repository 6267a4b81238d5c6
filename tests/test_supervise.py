"""Child processes and stop signals (``lorasweep.launch.supervise``), with real processes and real signals."""

import ast
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from lorasweep.launch import supervise
from processes import wait_gone

PY = sys.executable


running = supervise.running


def start_python(code: str, tmp_path, name="child"):
    """A child started by ``supervise.start`` running ``code``; its output goes to a file, returned too."""
    out = tmp_path / f"{name}.out"
    with open(out, "w") as handle:
        proc = supervise.start([PY, "-c", textwrap.dedent(code)], stdout=handle)
    return proc, out


def read_pids(out, count: int, timeout=10.0) -> list:
    """The first ``count`` integers the child printed, one a line, once it has printed them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in out.read_text().split("\n")[:-1] if line.strip().isdigit()]
        if len(lines) >= count:
            return [int(line) for line in lines[:count]]
        time.sleep(0.02)
    raise AssertionError(f"the child did not print {count} pid(s): {out.read_text()!r}")


# ---- starting --------------------------------------------------------------------------------


def test_a_child_runs_in_its_own_session_with_no_input(tmp_path):
    proc, out = start_python("import sys; print(sys.stdin.read() == '', flush=True)", tmp_path)
    assert proc.wait(timeout=10) == 0
    assert out.read_text() == "True\n"
    proc, _ = start_python("import time; time.sleep(30)", tmp_path, "sleeper")
    try:
        # its own session and process group, both named by its pid: a Ctrl-C to ours does not reach it
        assert os.getsid(proc.pid) == proc.pid and os.getpgid(proc.pid) == proc.pid
        assert os.getpgid(proc.pid) != os.getpgid(0)
    finally:
        supervise.stop([proc], grace_s=1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_its_parent_even_when_the_parent_is_sigkilled(tmp_path):
    # the middle process starts a sleeping child through supervise.start, prints its pid, waits to be killed
    middle, out = start_python(
        """
        import sys, time
        from lorasweep.launch import supervise
        child = supervise.start([sys.executable, "-c", "import time; time.sleep(60)"], stdout=sys.stdout)
        print(child.pid, flush=True)
        time.sleep(60)
        """, tmp_path)
    (child,) = read_pids(out, 1)
    assert running(child)
    middle.kill()
    middle.wait(timeout=10)
    assert wait_gone([child], timeout=5.0, poll=0.02) == []


# ---- stopping --------------------------------------------------------------------------------

TREE = """
import subprocess, sys, time
# two grandchildren in the child's process group (not their own session)
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
print(kids[0].pid, flush=True)
print(kids[1].pid, flush=True)
time.sleep(60)
"""


def test_a_tree_of_sleeping_processes_goes_within_the_grace(tmp_path):
    proc, out = start_python(TREE, tmp_path)
    grandchildren = read_pids(out, 2)
    began = time.monotonic()
    supervise.stop([proc], grace_s=5)
    took = time.monotonic() - began
    # SIGTERM ends sleeping processes at once: nothing waits out the 5 s grace, nobody needs SIGKILL
    assert took < 2.5
    assert proc.returncode == -signal.SIGTERM
    assert wait_gone(grandchildren, timeout=2, poll=0.02) == []


IGNORES_TERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    proc, out = start_python(IGNORES_TERM, tmp_path)
    deadline = time.monotonic() + 10
    while out.read_text() != "ready\n" and time.monotonic() < deadline:
        time.sleep(0.02)
    began = time.monotonic()
    supervise.stop([proc], grace_s=0.5)
    took = time.monotonic() - began
    assert proc.returncode == -signal.SIGKILL
    assert 0.5 <= took < 3.0  # the grace, waited out, then SIGKILL


def test_a_grandchild_that_ignores_sigterm_is_killed_with_its_group(tmp_path):
    # the child ends on SIGTERM, the grandchild it started does not: the group's SIGKILL still finds it
    proc, out = start_python(
        """
        import subprocess, sys, time
        kid = subprocess.Popen([sys.executable, "-c", %r])
        print(kid.pid, flush=True)
        time.sleep(60)
        """ % IGNORES_TERM.replace("print(\"ready\", flush=True)\n", ""), tmp_path)
    (grandchild,) = read_pids(out, 1)
    time.sleep(0.3)  # the grandchild has set its SIGTERM to ignored by now
    supervise.stop([proc], grace_s=0.5)
    assert proc.returncode == -signal.SIGTERM
    assert wait_gone([grandchild], timeout=3, poll=0.02) == []


def test_stop_leaves_reaped_children_alone_and_may_be_called_again(tmp_path):
    done, _ = start_python("pass", tmp_path, "done")
    assert done.wait(timeout=10) == 0
    sleeper, _ = start_python("import time; time.sleep(60)", tmp_path, "sleeper")
    supervise.stop([done, sleeper], grace_s=2)
    assert (done.returncode, sleeper.returncode) == (0, -signal.SIGTERM)
    supervise.stop([done, sleeper], grace_s=2)  # again: nothing left to signal, nothing raised
    assert (done.returncode, sleeper.returncode) == (0, -signal.SIGTERM)


@pytest.mark.parametrize("code, words", [
    (3, "exit status 3"),
    (-signal.SIGTERM, "killed by signal SIGTERM"),
    (-signal.SIGKILL, "killed by signal SIGKILL; the kernel's out-of-memory killer sends it too"),
    (-77, "killed by signal 77"),
])
def test_an_exit_status_in_words(code, words):
    assert supervise.describe_exit(code) == words


# ---- the process that started us -------------------------------------------------------------


def test_the_owners_are_the_shells_up_to_the_first_process_that_is_not_one(tmp_path):
    # "; true" keeps bash from exec'ing python in its place: python's parent is the shell
    script = f"{PY} -c 'from lorasweep.launch import supervise; print(supervise.owners())'; true"
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True)
    owners = ast.literal_eval(shell.stdout)  # a list of (pid, start time) tuples
    assert len(owners) == 2
    assert owners[1] == (os.getpid(), supervise.proc_stat(os.getpid())[3])  # this test's process: not a shell


def test_an_owner_is_gone_when_dead_or_its_pid_was_reused(tmp_path):
    parent = os.getppid()
    started = supervise.proc_stat(parent)[3]
    assert supervise.gone_owner([(parent, started)]) is None
    dead, _ = start_python("pass", tmp_path)
    dead.wait(timeout=10)
    assert supervise.gone_owner([(parent, started), (dead.pid, "1")]) == dead.pid
    # the pid runs, but not the process we watched: another start time
    assert supervise.gone_owner([(parent, started), (os.getpid(), "1")]) == os.getpid()
    # the first owner is the parent: once we have another (we were reparented), it is gone
    assert supervise.gone_owner([(os.getpid(), None)]) == os.getpid()


# ---- stop signals ----------------------------------------------------------------------------

STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@pytest.fixture
def own_handlers():
    """Distinct handlers of the test's own, restored afterwards whatever happens."""
    saved = {signum: signal.getsignal(signum) for signum in STOP}
    mine = {signum: (lambda s, f: None) for signum in STOP}
    for signum, handler in mine.items():
        signal.signal(signum, handler)
    yield mine
    for signum, handler in saved.items():
        signal.signal(signum, handler)


class Quiet:
    """A previous handler that counts its calls and raises nothing."""

    def __init__(self):
        self.calls = []

    def __call__(self, signum, frame):
        self.calls.append(signum)


def test_handlers_are_restored_after_the_block(own_handlers):
    with supervise.StopSignals() as layer:
        for signum in STOP:
            assert signal.getsignal(signum) == layer._handler
    assert {signum: signal.getsignal(signum) for signum in STOP} == own_handlers
    with pytest.raises(supervise.Terminated):
        with supervise.StopSignals():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)
    assert {signum: signal.getsignal(signum) for signum in STOP} == own_handlers


def test_a_signal_is_raised_once_as_terminated_with_the_shells_exit_status(own_handlers):
    quiet = Quiet()
    signal.signal(signal.SIGTERM, quiet)
    layer = supervise.StopSignals()
    with pytest.raises(supervise.Terminated) as raised:
        with layer:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                # a second signal while unwinding is not raised: the clean-up finishes
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
    assert raised.value.signum == signal.SIGTERM
    assert raised.value.code == 128 + signal.SIGTERM == 143
    assert isinstance(raised.value, SystemExit)
    assert layer.received == signal.SIGTERM
    assert quiet.calls == [signal.SIGTERM]  # the handler that was there before spoke first, once


def test_a_previous_handlers_exception_unwinds_instead(own_handlers):
    class Mine(Exception):
        pass

    def raising(signum, frame):
        raise Mine()

    signal.signal(signal.SIGTERM, raising)
    layer = supervise.StopSignals()
    with pytest.raises(Mine):
        with layer:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert layer.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is raising


def test_a_signal_inside_held_is_raised_on_leaving_it(own_handlers):
    reached = []
    with pytest.raises(supervise.Terminated) as raised:
        with supervise.StopSignals() as layer:
            with layer.held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                reached.append("end of the held block")  # not interrupted
            reached.append("after it")
    assert reached == ["end of the held block"]
    assert raised.value.signum == signal.SIGINT


def test_once_cleaning_up_a_signal_is_only_recorded(own_handlers):
    with supervise.StopSignals() as layer:
        layer.cleaning_up = True
        with layer.held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        finished = True
    assert finished and layer.received == signal.SIGTERM


def test_a_part_joins_the_layer_already_installed_and_it_is_restored_once(own_handlers):
    assert supervise._installed is None
    with supervise.StopSignals() as outer:
        inner = supervise.stop_signals((signal.SIGTERM,))
        assert inner is outer
        with inner:
            pass
        # leaving the inner block restores nothing: the outer block still handles the signals
        assert signal.getsignal(signal.SIGTERM) == outer._handler
    assert supervise._installed is None
    assert signal.getsignal(signal.SIGTERM) is own_handlers[signal.SIGTERM]
    fresh = supervise.stop_signals((signal.SIGTERM,))
    assert fresh is not outer and fresh.signals == (signal.SIGTERM,)


def test_the_layer_raises_exactly_once_when_two_parts_share_it(own_handlers):
    # the launcher's layer and the daemon's stop inside it: one signal, one Terminated,
    # and the daemon's clean-up runs after the workers'
    order = []
    with pytest.raises(supervise.Terminated):
        with supervise.StopSignals() as layer:
            joined = supervise.stop_signals()
            with joined:
                try:
                    try:
                        os.kill(os.getpid(), signal.SIGTERM)
                        time.sleep(5)
                    finally:
                        layer.cleaning_up = True
                        order.append("workers stopped")
                finally:
                    with joined.held():
                        os.kill(os.getpid(), signal.SIGTERM)  # a second one, during the daemon's quit
                        time.sleep(0.05)
                        order.append("daemon quit")
    assert order == ["workers stopped", "daemon quit"]


def test_outside_the_main_thread_nothing_is_installed(own_handlers):
    seen = {}

    def body():
        with supervise.StopSignals() as layer:
            seen["handler"] = signal.getsignal(signal.SIGTERM)
            with layer.held():
                pass
        seen["installed"] = supervise._installed

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10)
    assert seen == {"handler": own_handlers[signal.SIGTERM], "installed": None}
