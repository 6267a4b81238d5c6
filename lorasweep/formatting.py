"""How numbers are written for people: tables, plots, recommendations, logs and messages.

One module, so that a learning rate reads the same everywhere ("3e-4", "1.2e-3", the
study's own way). Cell identifiers are not displays: a cell's folder name keeps its
own fixed lr form (``grid.format_lr``, "3e-04"), because changing a path would make
every finished cell of an existing study look missing and rerun.

Pure Python (no pandas, no torch), so planning and the tables can both use it.
"""

import math
import numbers


def lr(value) -> str:
    """A learning rate: mantissa without trailing zeros, exponent without sign or leading zero.

    3e-4, 1.2e-3, 1e-2; four significant digits at most, as many as a cell id keeps.
    """
    mantissa, exponent = f"{float(value):.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def number(value) -> str:
    """A plain setting such as a target reward: 0.9, 0.75, 1 (no padding, no exponent for these)."""
    return f"{value:g}"


def is_finite(value) -> bool:
    """A real number that can be printed as one (not None, not a bool, not NaN or infinite)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def records(rows) -> list:
    """Table rows as a list of dicts, from a DataFrame (duck-typed: no pandas needed) or dicts."""
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    return [dict(row) for row in rows]
