"""Helpers for tests that start processes and must see them gone."""

import time

from lorasweep.launch.supervise import running


def wait_gone(pids, timeout=10.0, poll=0.05) -> list:
    """The pids still running after ``timeout`` seconds (empty when all went); a zombie counts as gone."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if running(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(poll)
