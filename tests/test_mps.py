"""The MPS controller against a fake nvidia-cuda-mps-control (and nvidia-smi) on PATH.

The fake control binary behaves like the real one where the controller relies on
it: ``-d`` forks a background daemon that writes its pid file into the pipe
folder; commands on stdin reach that daemon only through the same
CUDA_MPS_PIPE_DIRECTORY, and without a daemon the client prints "Cannot find MPS
control daemon process" and exits 1; ``quit`` makes the daemon exit. Every call
is logged (argv, stdin, pipe folder) to calls.jsonl in the state folder, and the
test controls the server and client lists and failure flags through that folder.
"""

import json
import os
import select
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lorasweep.launch import supervise
from lorasweep.errors import LorasweepError
from lorasweep.launch.mps import LOG_VAR, PIPE_VAR, MpsDaemon

REPO = Path(__file__).resolve().parents[1]

FAKE_CONTROL = textwrap.dedent(
    """\
    #!{python}
    import json, os, signal, subprocess, sys, time

    STATE = os.environ["FAKE_MPS_STATE"]
    PIPE = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    PID_FILE = os.path.join(PIPE, "nvidia-cuda-mps-control.pid")
    QUIT_FILE = os.path.join(PIPE, "fake-quit-requested")

    def flag(name):
        return os.path.exists(os.path.join(STATE, name))

    def daemon_alive():
        try:
            os.kill(int(open(PID_FILE).read()), 0)
            return True
        except (OSError, ValueError):
            return False

    def serve():
        def leave(*_):
            if os.path.exists(PID_FILE):
                os.unlink(PID_FILE)
            sys.exit(0)
        signal.signal(signal.SIGTERM, leave)
        with open(PID_FILE + ".tmp", "w") as handle:
            handle.write(str(os.getpid()))
        os.replace(PID_FILE + ".tmp", PID_FILE)
        while True:
            if os.path.exists(QUIT_FILE) and not flag("ignore_quit"):
                os.unlink(QUIT_FILE)
                leave()
            time.sleep(0.02)

    if sys.argv[1:] == ["--serve"]:
        serve()

    stdin = "" if sys.argv[1:] == ["-d"] else sys.stdin.read()
    with open(os.path.join(STATE, "calls.jsonl"), "a") as log:
        log.write(json.dumps({{"argv": sys.argv[1:], "stdin": stdin, "pipe": PIPE,
                              "log": os.environ.get("CUDA_MPS_LOG_DIRECTORY"), "time": time.time()}}) + "\\n")

    if sys.argv[1:] == ["-d"]:
        if flag("fail_start"):
            print("fake: the daemon refused to start", file=sys.stderr)
            sys.exit(1)
        if daemon_alive():
            print("An instance of this daemon is already running")
            sys.exit(1)
        subprocess.Popen([__file__, "--serve"], start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sys.exit(0)

    if not daemon_alive():
        print("Cannot find MPS control daemon process")
        sys.exit(1)
    words = stdin.split()
    if words[0] == "get_server_list":
        path = os.path.join(STATE, "servers.txt")
        print(open(path).read() if os.path.exists(path) else "", end="")
    elif words[0] == "get_client_list":
        path = os.path.join(STATE, "clients_" + words[1] + ".txt")
        print(open(path).read() if os.path.exists(path) else "", end="")
    elif words[0] == "quit":
        open(QUIT_FILE, "w").close()
    """
)

FAKE_SMI = textwrap.dedent(
    """\
    #!/bin/sh
    if [ -e "$FAKE_MPS_STATE/no_gpu" ]; then
        echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
        exit 9
    fi
    echo "GPU 0: NVIDIA Fake (UUID: GPU-00000000-0000-0000-0000-000000000000)"
    """
)


class FakeMps:
    def __init__(self, root: Path, monkeypatch):
        self.state = root / "fake-state"
        self.bin = root / "fake-bin"
        self.smi_only = root / "fake-bin-smi-only"
        for folder in (self.state, self.bin, self.smi_only):
            folder.mkdir()
        self._script(self.bin / "nvidia-cuda-mps-control", FAKE_CONTROL.format(python=sys.executable))
        self._script(self.bin / "nvidia-smi", FAKE_SMI)
        self._script(self.smi_only / "nvidia-smi", FAKE_SMI)
        self.job = root / "job"
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("FAKE_MPS_STATE", str(self.state))
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.delenv(PIPE_VAR, raising=False)
        monkeypatch.delenv(LOG_VAR, raising=False)
        self.pid_files = [self.job / "mps" / "pipe" / "nvidia-cuda-mps-control.pid"]

    @staticmethod
    def _script(path: Path, text: str):
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def without_control_binary(self):
        # Only the fake nvidia-smi: nothing else on PATH can supply the control binary.
        self.monkeypatch.setenv("PATH", str(self.smi_only))

    def flag(self, name: str):
        (self.state / name).touch()

    def serve_clients(self, server: int, clients: list[int]):
        (self.state / "servers.txt").write_text(f"{server}\n")
        (self.state / f"clients_{server}.txt").write_text("".join(f"{pid}\n" for pid in clients))

    def calls(self) -> list[dict]:
        path = self.state / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def commands(self) -> list[str]:
        return [" ".join(call["argv"]) or call["stdin"].strip() for call in self.calls()]

    def daemon_pid(self):
        for pid_file in self.pid_files:
            try:
                return int(pid_file.read_text())
            except (OSError, ValueError):
                continue
        return None

    def daemon_alive(self) -> bool:
        pid = self.daemon_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def cleanup(self):
        # Kill a fake daemon a failing test may have left running (ours, by its pid).
        pid = self.daemon_pid()
        if pid is not None and self.daemon_alive():
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    fake = FakeMps(tmp_path, monkeypatch)
    yield fake
    fake.cleanup()


# ---- start, environment, quit ---------------------------------------------------------


def test_start_gives_workers_the_private_folders_and_quits_after_success(fake):
    before = signal.getsignal(signal.SIGTERM)
    with MpsDaemon(fake.job, "required") as mps:
        env = mps.worker_env({"KEEP": "1"})
        assert env[PIPE_VAR] == str(fake.job / "mps" / "pipe")
        assert env[LOG_VAR] == str(fake.job / "mps" / "log")
        assert env["KEEP"] == "1"
        for folder in (fake.job / "mps" / "pipe", fake.job / "mps" / "log"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert mps.state == "running"
        assert fake.daemon_alive()
        assert signal.getsignal(signal.SIGTERM) is not before
    # The daemon was started, then quit, through the job's own pipe folder.
    commands = fake.commands()
    assert commands.index("-d") < commands.index("quit")
    assert {call["pipe"] for call in fake.calls()} == {str(fake.job / "mps" / "pipe")}
    assert {call["log"] for call in fake.calls()} == {str(fake.job / "mps" / "log")}
    assert not fake.daemon_alive()
    record = mps.record()
    assert record["state"] == "running" and record["mode"] == "required"
    assert record["stop"]["stopped"] is True
    assert record["gpus"] == ["GPU 0: NVIDIA Fake (UUID: GPU-00000000-0000-0000-0000-000000000000)"]
    assert signal.getsignal(signal.SIGTERM) is before
    json.dumps(record)


def test_verification_passes_when_the_daemon_lists_every_worker(fake):
    fake.serve_clients(4242, [111, 222, 333])
    with MpsDaemon(fake.job, "required") as mps:
        result = mps.verify_clients([111, 222], timeout_s=2)
    assert result["ok"] is True
    assert result["servers"] == [4242] and result["missing"] == []
    assert "get_client_list 4242" in fake.commands()
    assert mps.record()["verification"] == result


def test_verification_waits_for_workers_that_join_late(fake):
    fake.serve_clients(4242, [111])
    with MpsDaemon(fake.job, "required") as mps:
        clients = str(fake.state / "clients_4242.txt")
        late = f"import time; time.sleep(0.4); open({clients!r}, 'w').write('111\\n222\\n')"
        joiner = subprocess.Popen([sys.executable, "-c", late])
        result = mps.verify_clients([111, 222], timeout_s=10)
        joiner.wait(timeout=10)
    assert result["ok"] is True and result["seconds"] > 0.2


def test_a_worker_missing_from_the_clients_fails_in_required_mode(fake):
    fake.serve_clients(4242, [111])
    with pytest.raises(LorasweepError, match=r"worker process\(es\) \[222\] are not clients") as error:
        with MpsDaemon(fake.job, "required") as mps:
            mps.verify_clients([111, 222], timeout_s=0.3)
    assert str(fake.job / "mps" / "pipe") in str(error.value)
    # The failed check ends the block with an exception, and the daemon still goes.
    assert "quit" in fake.commands()
    assert not fake.daemon_alive()


def test_a_worker_missing_from_the_clients_is_recorded_in_auto_mode(fake):
    fake.serve_clients(4242, [111])
    with MpsDaemon(fake.job, "auto") as mps:
        result = mps.verify_clients([111, 222], timeout_s=0.3)
    assert result["ok"] is False and result["missing"] == [222]
    assert mps.record()["verification"]["missing"] == [222]
    assert mps.record()["state"] == "running"


def test_no_server_yet_counts_as_missing(fake):
    with MpsDaemon(fake.job, "auto") as mps:
        result = mps.verify_clients([111], timeout_s=0.2)
    assert result["ok"] is False and result["servers"] == []


def test_quit_after_a_worker_failure_inside_the_block(fake):
    with pytest.raises(RuntimeError, match="worker seed 3"):
        with MpsDaemon(fake.job, "required"):
            assert fake.daemon_alive()
            raise RuntimeError("worker seed 3 exited with status 1")
    assert "quit" in fake.commands()
    assert not fake.daemon_alive()


CHILD = """
import time
from pathlib import Path
from lorasweep.launch.mps import MpsDaemon
with MpsDaemon(Path({job!r}), "required") as mps:
    print("ready", flush=True)
    time.sleep(60)
print("not reached", flush=True)
"""


def test_quit_when_the_controller_process_gets_sigterm(fake):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(job=str(fake.job))],
        cwd=REPO,  # the checkout's package, first on the child's sys.path
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 15)
        assert ready and child.stdout.readline().strip() == "ready", child.stderr.read()
        assert fake.daemon_alive()
        sent = time.time()
        child.send_signal(signal.SIGTERM)
        rc = child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    quits = [call for call in fake.calls() if call["stdin"].strip() == "quit"]
    assert quits and quits[0]["time"] - sent < 5
    assert not fake.daemon_alive()
    # Still a termination for Snakemake: 128 + SIGTERM.
    assert rc == 128 + signal.SIGTERM
    assert "not reached" not in child.stdout.read()


class LauncherTerminated(Exception):
    pass


def test_sigterm_calls_the_launchers_own_handler_first(fake):
    def launcher_handler(signum, frame):
        raise LauncherTerminated()

    previous = signal.signal(signal.SIGTERM, launcher_handler)
    try:
        with pytest.raises(LauncherTerminated):
            with MpsDaemon(fake.job, "required") as mps:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # interrupted by the handler
        assert "quit" in fake.commands() and not fake.daemon_alive()
        assert mps.record()["signal"] == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is launcher_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_inside_the_launchers_layer_one_sigterm_stops_the_workers_then_the_daemon_once(fake, tmp_path):
    # the cell launcher's layer (SIGTERM, SIGINT, SIGHUP); the daemon joins it instead of stacking a handler
    before = signal.getsignal(signal.SIGTERM)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    order = []
    try:
        with pytest.raises(supervise.Terminated) as raised:
            with supervise.StopSignals() as layer:
                with MpsDaemon(fake.job, "required") as mps:
                    assert signal.getsignal(signal.SIGTERM) == layer._handler  # no second handler
                    try:
                        os.kill(os.getpid(), signal.SIGTERM)
                        time.sleep(5)  # interrupted by the layer
                    finally:
                        layer.cleaning_up = True
                        supervise.stop([worker], grace_s=5)
                        order.append(("workers stopped", fake.daemon_alive()))
                        os.kill(os.getpid(), signal.SIGTERM)  # a second one: recorded, not raised
        order.append(("daemon quit", fake.daemon_alive()))
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert raised.value.signum == signal.SIGTERM and raised.value.code == 143
    # the daemon was still up while the workers went, and quit (once) after them
    assert order == [("workers stopped", True), ("daemon quit", False)]
    assert worker.returncode == -signal.SIGTERM
    assert [call["stdin"].strip() for call in fake.calls()].count("quit") == 1
    assert mps.record()["signal"] == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_while_quitting_is_held_until_the_quit_is_done(fake, monkeypatch):
    quits = []
    real_quit = MpsDaemon._quit

    def quit_under_a_signal(self):
        os.kill(os.getpid(), signal.SIGTERM)  # lands while the quit is being sent
        time.sleep(0.05)
        result = real_quit(self)
        quits.append(result["stopped"])
        return result

    monkeypatch.setattr(MpsDaemon, "_quit", quit_under_a_signal)
    with pytest.raises(supervise.Terminated) as raised:
        with MpsDaemon(fake.job, "required") as mps:
            pass
    assert quits == [True] and not fake.daemon_alive()  # the quit finished before the signal was raised
    assert raised.value.code == 128 + signal.SIGTERM
    assert mps.record()["signal"] == "SIGTERM" and mps.record()["stop"]["stopped"] is True


# ---- when MPS is not used ---------------------------------------------------------------


def test_mode_off_starts_nothing_and_isolates_the_workers(fake):
    with MpsDaemon(fake.job, "off") as mps:
        env = mps.worker_env({})
        result = mps.verify_clients([111], timeout_s=1)
    assert fake.calls() == []
    assert mps.state == "off"
    # Pointed at an empty private pipe folder, a worker finds no daemon and runs
    # without MPS even if a system-wide daemon is up.
    assert env[PIPE_VAR] == str(fake.job / "mps" / "pipe")
    assert result == {"checked": False, "expected": [111], "reason": "MPS off: mps: off in the config"}
    assert mps.record()["stop"] is None


def test_missing_control_binary_in_auto_mode_is_recorded(fake):
    fake.without_control_binary()
    with MpsDaemon(fake.job, "auto") as mps:
        assert mps.worker_env({})[PIPE_VAR] == str(fake.job / "mps" / "pipe")
    record = mps.record()
    assert record["state"] == "unavailable"
    assert record["reason"] == "nvidia-cuda-mps-control was not found on PATH"
    assert record["isolated_from_other_daemons"] is True


def test_missing_control_binary_in_required_mode_says_so(fake):
    fake.without_control_binary()
    with pytest.raises(LorasweepError, match="mps: required, but nvidia-cuda-mps-control was not found on PATH"):
        with MpsDaemon(fake.job, "required"):
            pytest.fail("the block must not run")


def test_no_gpu(fake):
    fake.flag("no_gpu")
    with MpsDaemon(fake.job, "auto") as mps:
        assert mps.worker_env({}) == {}
    assert mps.record()["state"] == "unavailable"
    assert mps.record()["reason"].startswith("nvidia-smi -L failed (exit 9)")
    with pytest.raises(LorasweepError, match=r"mps: required, but nvidia-smi -L failed \(exit 9\)"):
        with MpsDaemon(fake.job, "required"):
            pass
    assert "-d" not in fake.commands()


def test_no_nvidia_smi(fake, tmp_path, monkeypatch):
    only_control = tmp_path / "only-control"
    only_control.mkdir()
    (only_control / "nvidia-cuda-mps-control").symlink_to(fake.bin / "nvidia-cuda-mps-control")
    monkeypatch.setenv("PATH", str(only_control))
    with MpsDaemon(fake.job, "auto") as mps:
        pass
    assert mps.record()["reason"] == "nvidia-smi was not found on PATH, so no GPU could be confirmed"


def test_a_daemon_that_will_not_start(fake):
    fake.flag("fail_start")
    with MpsDaemon(fake.job, "auto") as mps:
        assert mps.worker_env({})[PIPE_VAR] == str(fake.job / "mps" / "pipe")
    assert mps.record()["state"] == "failed"
    assert "the daemon refused to start" in mps.record()["reason"]
    with pytest.raises(LorasweepError, match=r"mps: required, but nvidia-cuda-mps-control -d failed \(exit 1\)"):
        with MpsDaemon(fake.job, "required"):
            pass


def test_the_log_folder_can_live_outside_the_job_folder(fake, tmp_path):
    kept = tmp_path / "logs" / "mps"
    with MpsDaemon(fake.job, "required", log_dir=kept) as mps:
        assert mps.worker_env({})[LOG_VAR] == str(kept)
    assert {call["log"] for call in fake.calls()} == {str(kept)}
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700


def test_unknown_mode_names_the_config_key(tmp_path):
    with pytest.raises(LorasweepError, match="mps: 'on' is not one of auto, required, off"):
        MpsDaemon(tmp_path, "on")


# ---- recovery -----------------------------------------------------------------------------


def test_a_daemon_left_by_a_killed_attempt_is_quit_first(fake):
    pipe = fake.job / "mps" / "pipe"
    pipe.mkdir(parents=True)
    env = dict(os.environ, **{PIPE_VAR: str(pipe), LOG_VAR: str(fake.job / "mps" / "log")})
    subprocess.run([str(fake.bin / "nvidia-cuda-mps-control"), "-d"], env=env, check=True, timeout=10)
    for _ in range(100):
        if fake.daemon_alive():
            break
        time.sleep(0.05)
    stale_pid = fake.daemon_pid()
    with MpsDaemon(fake.job, "required") as mps:
        assert fake.daemon_pid() != stale_pid
    assert mps.record()["stale_daemon"]["stopped"] is True
    assert fake.commands().count("-d") == 2


def test_a_daemon_that_ignores_quit_is_terminated_by_its_pid(fake):
    fake.flag("ignore_quit")
    with MpsDaemon(fake.job, "required", stop_timeout_s=0.5) as mps:
        pid = fake.daemon_pid()
    stop = mps.record()["stop"]
    assert stop["terminated_by_pid"] == pid
    assert stop["stopped"] is True
    assert not fake.daemon_alive()


def test_a_long_job_folder_gets_a_short_pipe_folder(fake, tmp_path):
    job = tmp_path / ("cell_" + "x" * 100)
    with MpsDaemon(job, "required") as mps:
        pipe = Path(mps.worker_env({})[PIPE_VAR])
        fake.pid_files.append(pipe / "nvidia-cuda-mps-control.pid")
        assert len(os.fsencode(pipe / "control")) <= 107
        assert stat.S_IMODE(pipe.stat().st_mode) == 0o700
    assert mps.record()["short_pipe_dir"] is True
    assert not pipe.exists()
