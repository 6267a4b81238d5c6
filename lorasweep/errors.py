"""The one exception type for mistakes a user can fix (bad config, missing input).

Entry points print its message on one line and exit with status 2, without a
traceback; anything else is a bug and keeps its traceback.
"""


class LorasweepError(Exception):
    """A user-facing error; the message names the thing that is wrong."""
