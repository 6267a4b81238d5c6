"""Table rows and their markdown / CSV forms. Formats what ``metrics`` computed; decides nothing.

The lr-scaling table keeps the study's columns exactly
(``bs | lr | avg steps to T | step_time | wall to T | speedup``) and adds the
seed spread and the count of censored runs after them.
"""

import io

import pandas as pd
from tabulate import tabulate

from . import formatting


def lr_scaling_rows(cells: list, base_batch_size: int) -> list:
    """One row per cell: ``cells`` holds (Cell-like dict, CellOutcome) pairs of one study."""
    rows = []
    for cell, outcome in cells:
        steps = outcome.converged
        rows.append({
            "rank": cell["rank"],
            "batch_size": cell["batch_size"],
            "lr": cell["lr"],
            "is_control": bool(cell["control"]),
            "n": cell["n"],
            "avg_steps": outcome.avg_steps,
            "min_steps": min(steps) if steps else None,
            "max_steps": max(steps) if steps else None,
            "censored": outcome.censored,
            "steps_per_seed": " ".join(str(w.steps_to_target) if not w.censored else f">{w.steps_run}" for w in outcome.workers),
            "step_time": outcome.step_time,
            "wall": outcome.wall,
        })
    # speedup = wall of the baseline batch size (same rank, scaled, not a control) / wall of the cell
    for row in rows:
        base = [r for r in rows if r["rank"] == row["rank"] and r["batch_size"] == base_batch_size and not r["is_control"]]
        base_wall = base[0]["wall"] if base else None
        row["speedup"] = base_wall / row["wall"] if base_wall and row["wall"] else None
    rows.sort(key=lambda r: (r["rank"], r["is_control"], r["batch_size"], r["lr"]))
    return rows


def _threshold(target: float) -> str:
    return formatting.number(target)


def _steps_cell(row: dict, max_steps: int) -> str:
    if row["avg_steps"] is None:
        return f"not reached (> {max_steps})"
    text = f"{row['avg_steps']:.0f}"
    if row["censored"]:
        text += f" ({row['censored']} of {row['n']} not reached)"
    return text


def _seconds(value) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"


def lr_scaling_markdown(rows: list, target: float, max_steps: int) -> str:
    t = _threshold(target)
    headers = ["bs", "lr", f"avg steps to {t}", "step_time", f"wall to {t}", "speedup", "steps min–max", "censored"]
    body = []
    for row in rows:
        lr = formatting.lr(row["lr"]) + (" (no scaling)" if row["is_control"] else "")
        spread = "—" if row["min_steps"] is None else f"{row['min_steps']}–{row['max_steps']}"
        body.append([
            row["batch_size"],
            lr,
            _steps_cell(row, max_steps),
            "—" if row["step_time"] is None else f"{row['step_time']:.2f}s",
            _seconds(row["wall"]),
            "—" if row["speedup"] is None else f"{row['speedup']:.1f}x" + ("*" if row["censored"] else ""),
            spread,
            f"{row['censored']}/{row['n']}",
        ])
    table = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    if any(r["censored"] and r["avg_steps"] is not None for r in rows):
        table += ("\n\n\\* some seeds did not reach the target: the average covers the seeds that did, "
                  "so the speedup is an optimistic estimate for that cell.")
    return table


def to_csv(rows: list) -> str:
    buffer = io.StringIO()
    pd.DataFrame(rows).to_csv(buffer, index=False)
    return buffer.getvalue()


def concurrency_markdown(rows: list) -> str:
    """The study's ``concurrent | step_time | agg. throughput`` plus samples/s and efficiency."""
    headers = ["concurrent", "step_time", "agg. throughput", "samples/s", "efficiency"]
    body = [
        [row["n"], f"{row['step_time']:.2f}s", f"{row['agg_steps_per_s']:.2f} steps/s",
         f"{row['samples_per_s']:.0f}", f"{row['efficiency']:.2f}"]
        for row in rows
    ]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
