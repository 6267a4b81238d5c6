"""Throughput math for the concurrency experiment.

One place turns a cell's step time into the study's throughput figures, so the
tables, the plots and the recommendations all read the same numbers:

- agg. throughput = n / step_time, with step_time measured while the n workers
  share the device (docs/numbers.md, definition 6);
- samples/s = n * batch_size / step_time (batch_size counts completions);
- efficiency = per-worker throughput relative to the lowest measured level,
  (agg / n) / (agg_lowest / n_lowest); 1.0 means the added workers cost nothing.
"""

import math
import numbers

from ..errors import LorasweepError


def throughput_rows(levels: list[dict]) -> list[dict]:
    """Rows sorted by ``n``, each input row extended with the throughput figures.

    Every input row needs ``n`` (concurrent workers), ``step_time`` (seconds) and
    ``batch_size``; other keys (rank, lr, device, ...) are passed through.
    """
    if not levels:
        return []
    rows = sorted((dict(level) for level in levels), key=lambda row: row["n"])
    seen = set()
    for row in rows:
        _check_level(row)
        if row["n"] in seen:
            # Two step times for one level would make "relative to the lowest
            # level" ambiguous; the caller must split them into separate series.
            raise LorasweepError(f"concurrency level n={row['n']} appears twice in one series")
        seen.add(row["n"])
        row["agg_steps_per_s"] = row["n"] / row["step_time"]
        row["samples_per_s"] = row["n"] * row["batch_size"] / row["step_time"]
    per_worker_lowest = rows[0]["agg_steps_per_s"] / rows[0]["n"]
    for row in rows:
        row["efficiency"] = (row["agg_steps_per_s"] / row["n"]) / per_worker_lowest
    return rows


def _check_level(row: dict) -> None:
    for key in ("n", "step_time", "batch_size"):
        if key not in row:
            raise LorasweepError(f"concurrency level {row!r} has no '{key}'")
    n, step_time = row["n"], row["step_time"]
    # numbers.* rather than int/float: rows read with pandas carry numpy scalars.
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise LorasweepError(f"concurrency level n={n!r} is not a positive whole number")
    if not isinstance(step_time, numbers.Real) or not math.isfinite(step_time) or step_time <= 0:
        raise LorasweepError(f"concurrency level n={n}: step_time={step_time!r} is not a positive number of seconds")
    if not isinstance(row["batch_size"], numbers.Integral) or row["batch_size"] < 1:
        raise LorasweepError(
            f"concurrency level n={n}: batch_size={row['batch_size']!r} is not a positive whole number"
        )
    # Plain Python numbers keep the rows JSON-serialisable.
    row["n"], row["step_time"], row["batch_size"] = int(n), float(step_time), int(row["batch_size"])
