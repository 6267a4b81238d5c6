"""What the launcher quotes from a failed worker's log."""

from lorasweep.launch import worker_log
from lorasweep.errors import error_line

TRACEBACK = [
    "lorasweep worker: seed 1: loading the model",
    "Traceback (most recent call last):",
    '  File "worker.py", line 3, in train',
    "    raise RuntimeError('boom')",
    "RuntimeError: boom",
    "",
]


def test_the_stage_error_line_is_found_as_the_entry_point_writes_it():
    lines = ["step 1", error_line("worker", "seed 3: loss is nan at step 2"), "exiting"]
    assert lines[1] == "lorasweep worker: error: seed 3: loss is nan at step 2"
    assert worker_log.error_message(lines) == "seed 3: loss is nan at step 2"
    assert worker_log.error_message(["x", error_line("fused", "seed 4: reward is inf")]) == "seed 4: reward is inf"
    # another stage's error line is not a worker's
    assert worker_log.error_message([error_line("tables", "no cells")]) is None


def test_a_traceback_is_summed_up_by_its_last_line():
    assert worker_log.error_message(TRACEBACK) == "RuntimeError: boom"
    assert worker_log.error_message(["just output", "  indented"]) is None


def test_the_last_lines_are_indented_under_the_message(tmp_path):
    log = tmp_path / "seed1.log"
    log.write_text("\n".join(f"line {i}" for i in range(1, 9)) + "\n\n")
    lines = worker_log.read_lines(log)
    assert lines == [f"line {i}" for i in range(1, 9)]
    assert worker_log.last_lines(lines, 3) == "    line 6\n    line 7\n    line 8"
    assert worker_log.read_lines(tmp_path / "missing.log") == []
