"""The one exception type for mistakes a user can fix (bad config, missing input).

Entry points print its message on one line and exit with status 2, without a
traceback; anything else is a bug and keeps its traceback.
"""


class LorasweepError(Exception):
    """A user-facing error; the message names the thing that is wrong."""


def error_line(stage: str, error) -> str:
    """The one line a stage prints for a LorasweepError; a launcher finds it again in the stage's log."""
    return f"lorasweep {stage}: error: {error}"


def output_tail(text: str, limit: int = 300) -> str:
    """The end of a tool's output, short enough to quote in a one-line message."""
    text = (text or "").strip()
    return text if len(text) <= limit else "…" + text[-limit:]
