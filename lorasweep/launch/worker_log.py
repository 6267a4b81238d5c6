"""What a failed worker's log says: the line naming the error, and its last lines.

A worker (``python -m lorasweep worker``) or a fused pack (``... fused``) writes
its output to a log of its own; when it fails, the launcher's message quotes the
line that says what went wrong and the log's last lines, so that the reader does
not have to open the log to know why.
"""

from pathlib import Path

from ..errors import error_line

STAGES = ("worker", "fused")  # the stages the launcher starts, whose error lines it looks for


def read_lines(path: Path) -> list:
    """The log's lines; none when it cannot be read (a failure report must not fail)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    except OSError:
        return []


def error_message(lines: list):
    """What went wrong, as the log says it: a stage's error line, else a traceback's last line, else None."""
    markers = tuple(error_line(stage, "") for stage in STAGES)
    for line in reversed(lines):
        for marker in markers:
            if line.startswith(marker):
                return line[len(marker):]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        for line in reversed(lines):
            if line.strip() and not line.startswith((" ", "\t")):
                return line.strip()  # "SomeError: message", the traceback's last line
    return None


def last_lines(lines: list, count: int = 5) -> str:
    """The last ``count`` lines, indented under the message that quotes them."""
    return "\n".join("    " + line for line in lines[-count:])
