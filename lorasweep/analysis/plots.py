"""PNG plots of the recorded tables: steps vs batch size, wall per cell, concurrency.

Each function takes the table as a DataFrame or a list of dicts (the columns are
named in its docstring), draws with matplotlib's object API on an Agg canvas, and
writes the PNG atomically. No pyplot: it keeps global state (a figure registry, a
backend choice) that a library should not touch, and needs no display.
"""

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from .. import formatting
from ..atomic import write_bytes
from ..errors import LorasweepError

STEPS_COLUMNS = ("rank", "batch_size", "lr", "avg_steps", "min_steps", "max_steps", "censored", "is_control")
WALL_COLUMNS = ("rank", "batch_size", "lr", "wall", "censored", "is_control")
CONCURRENCY_COLUMNS = ("n", "step_time", "agg_steps_per_s", "samples_per_s", "efficiency")
# Columns that, when present, tell concurrency series apart (one line each).
SERIES_KEYS = ("rank", "batch_size", "lr", "packing", "mps")

DPI = 120
CENSORED_COLOR = "#c0392b"


def plot_steps_vs_batch(df, path, note: str | None = None) -> Path:
    """Avg steps to target vs batch size, one line per rank, with error bars.

    Columns: rank, batch_size, lr, avg_steps, min_steps, max_steps, censored,
    is_control; with steps_lo and steps_hi (the 95% interval of the restricted
    mean) the bars show that interval, else the min–max over seeds. Cells with
    censored seeds get an open red ring and are named in the legend: a censored
    seed counts as max_steps, so their average is a lower bound.
    Controls (no lr scaling) are separate square markers, not joined to the line.
    """
    return _save(steps_vs_batch_figure(df, note), path)


def steps_vs_batch_figure(df, note: str | None = None) -> Figure:
    rows = _table_rows(df, STEPS_COLUMNS, "steps-vs-batch plot")
    with_interval = all(key in rows[0] for key in ("steps_lo", "steps_hi"))
    low_key, high_key = ("steps_lo", "steps_hi") if with_interval else ("min_steps", "max_steps")
    fig, ax = _figure(1, height=5.6)
    colors = _rank_colors(rows)
    series = [(rank, is_control) for rank in colors for is_control in (False, True)
              if any(r["rank"] == rank and bool(r["is_control"]) == is_control for r in rows)]
    for rank, color in colors.items():
        for is_control in (False, True):
            if (rank, is_control) not in series:
                continue
            # a small sideways shift per series (on the log axis), so that bars at one batch size do not hide each other
            dodge = 2 ** (0.04 * (series.index((rank, is_control)) - (len(series) - 1) / 2))
            cells = sorted(
                (
                    r
                    for r in rows
                    if r["rank"] == rank and bool(r["is_control"]) == is_control and formatting.is_finite(r["avg_steps"])
                ),
                key=lambda r: r["batch_size"],
            )
            if not cells:
                continue
            xs = [r["batch_size"] * dodge for r in cells]
            ys = [r["avg_steps"] for r in cells]
            yerr = [
                [max(0.0, r["avg_steps"] - r[low_key]) if formatting.is_finite(r[low_key]) else 0.0 for r in cells],
                [max(0.0, r[high_key] - r["avg_steps"]) if formatting.is_finite(r[high_key]) else 0.0 for r in cells],
            ]
            label = f"rank {rank}" + (", no lr scaling (control)" if is_control else ", lr scaled")
            ax.errorbar(
                xs, ys, yerr=yerr, color=color, capsize=4, label=label,
                linestyle="none" if is_control else "-",
                marker="s" if is_control else "o", markersize=7,
            )
            for r in cells:
                if r["censored"]:
                    ax.plot(r["batch_size"] * dodge, r["avg_steps"], marker="o", markersize=14, markerfacecolor="none",
                            markeredgecolor=CENSORED_COLOR, markeredgewidth=1.5, linestyle="none")
    unplotted = [r for r in rows if not formatting.is_finite(r["avg_steps"])]
    if unplotted:
        # A cell where no seed reached the target has no average; say so rather than
        # let it vanish from the plot.
        names = ", ".join(_short_cell(r) for r in unplotted)
        ax.text(0.01, 0.01, f"not shown, no seed reached the target: {names}", transform=ax.transAxes,
                fontsize=8, color=CENSORED_COLOR, va="bottom")
    partly = [r for r in rows if r["censored"] and formatting.is_finite(r["avg_steps"])]
    if partly:
        # Named in the legend, not beside the points: cells of two ranks at one batch size
        # would put their labels on top of each other.
        names = ", ".join(f"{_short_cell(r)} ({r['censored']} of {r['n']})" if "n" in r else _short_cell(r)
                          for r in partly)
        ax.plot([], [], marker="o", markersize=10, markerfacecolor="none", markeredgecolor=CENSORED_COLOR,
                linestyle="none", label=f"censored seeds, a lower bound: {names}")
    _batch_axis(ax, rows)
    what = "95% Student-t interval over seeds" if with_interval else "min–max over seeds"
    ax.set_ylabel(f"avg steps to target\n(bars: {what})")
    ax.margins(y=0.1)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    # Below the axes: inside, it would hide points.
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    _title(fig, "Steps to target vs batch size", note)
    return fig


def plot_wall_per_cell(df, path, note: str | None = None) -> Path:
    """Bar chart of wall-clock time to target (s) per cell, grouped by rank.

    Columns: rank, batch_size, lr, wall, censored, is_control; with wall_lo and
    wall_hi, error bars show the wall's 95% interval. Controls are hatched; cells with censored seeds have a red edge and a "≥" label; a cell
    with no wall at all (every seed censored) is named with an empty slot.
    """
    rows = _table_rows(df, WALL_COLUMNS, "wall-per-cell plot")
    rows.sort(key=lambda r: (r["rank"], bool(r["is_control"]), r["batch_size"], r["lr"]))
    colors = _rank_colors(rows)
    fig, ax = _figure(1, width=max(6.4, 0.9 * len(rows) + 2))
    walls = [r["wall"] if formatting.is_finite(r["wall"]) else 0.0 for r in rows]
    top = max(walls) if any(walls) else 1.0
    with_interval = all(key in rows[0] for key in ("wall_lo", "wall_hi"))
    for x, (r, wall) in enumerate(zip(rows, walls)):
        censored = bool(r["censored"])
        ax.bar(
            x, wall, color=colors[r["rank"]], hatch="//" if r["is_control"] else None,
            edgecolor=CENSORED_COLOR if censored else "black", linewidth=2 if censored else 0.6,
        )
        label_at = wall
        if with_interval and formatting.is_finite(r["wall_lo"]) and formatting.is_finite(r["wall_hi"]):
            ax.errorbar(x, wall, yerr=[[max(0.0, wall - r["wall_lo"])], [max(0.0, r["wall_hi"] - wall)]],
                        color="black", capsize=4, linewidth=1)
            label_at = max(wall, r["wall_hi"])
            top = max(top, r["wall_hi"])
        if formatting.is_finite(r["wall"]):
            text = f"{'≥ ' if censored else ''}{r['wall']:.0f} s"
        else:
            text = "no wall\n(all censored)"
        ax.annotate(text, (x, label_at), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8,
                    color=CENSORED_COLOR if censored else "black")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(
        [_cell_label(r) for r in rows],
        fontsize=8,
    )
    ax.set_ylim(0, top * 1.15)
    ax.set_ylabel("wall to target (s) = avg steps × step time"
                  + ("\n(bars: 95% Student-t interval over seeds)" if with_interval else ""))
    ax.grid(True, axis="y", alpha=0.3)
    handles = [Patch(facecolor=color, edgecolor="black", label=f"rank {rank}") for rank, color in colors.items()]
    if any(r["is_control"] for r in rows):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="control (no lr scaling)"))
    if any(r["censored"] for r in rows):
        handles.append(Patch(facecolor="white", edgecolor=CENSORED_COLOR, linewidth=2,
                             label="has censored seeds (lower bound)"))
    ax.legend(handles=handles, fontsize=8)
    _title(fig, "Wall-clock time to target per cell", note)
    return _save(fig, path)


def plot_concurrency(df, path, note: str | None = None) -> Path:
    """Aggregate throughput (left) and step time (right) vs concurrent workers.

    Columns: n, step_time, agg_steps_per_s, samples_per_s, efficiency; optional
    rank, batch_size, lr, packing (processes or fused), mps split the rows into
    series, drawn on the same axes. The dashed line is
    linear scaling from the lowest level: the gap to it is the efficiency lost.
    """
    rows = _table_rows(df, CONCURRENCY_COLUMNS, "concurrency plot")
    fig, (left, right) = _figure(2)
    groups = {}
    for r in rows:
        groups.setdefault(tuple((key, r[key]) for key in SERIES_KEYS if key in r), []).append(r)
    palette = _palette()
    for index, (key, series) in enumerate(sorted(groups.items(), key=lambda item: str(item[0]))):
        series.sort(key=lambda r: r["n"])
        color = palette[index % len(palette)]
        label = _series_label(key)
        ns = [r["n"] for r in series]
        left.plot(ns, [r["agg_steps_per_s"] for r in series], "o-", color=color, label=label)
        lowest = series[0]
        per_worker = lowest["agg_steps_per_s"] / lowest["n"]
        left.plot([ns[0], ns[-1]], [per_worker * ns[0], per_worker * ns[-1]], "--", color=color, alpha=0.5,
                  label=f"linear scaling from n={ns[0]}" + (f" ({label})" if label else ""))
        # Alternate label sides between series so that shared levels stay legible.
        offset = -14 if index % 2 == 0 else 8
        for r in series:
            left.annotate(f"{r['efficiency']:.2f}", (r["n"], r["agg_steps_per_s"]), textcoords="offset points",
                          xytext=(0, offset), ha="center", fontsize=7, color=color)
        right.plot(ns, [r["step_time"] for r in series], "s-", color=color, label=label)
    for ax in (left, right):
        ax.set_xlabel("concurrent runs (n)")
        ax.set_xticks(sorted({r["n"] for r in rows}))
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    left.set_ylabel("aggregate throughput (steps/s) = n / step time")
    left.set_title("Aggregate throughput (labels: efficiency)", fontsize=10)
    right.set_ylabel("step time (s) while n runs share the device")
    right.set_title("Step time", fontsize=10)
    left.legend(fontsize=8)
    if len(groups) > 1:
        right.legend(fontsize=8)
    _title(fig, "Concurrency: throughput and step time", note)
    return _save(fig, path)


def plot_noise_scale(df, path, note: str | None = None) -> Path:
    """The gradient noise scale B_simple (in groups) over training steps, one line per lr-scaling cell.

    Columns: rank, batch_size, lr, is_control, step, b_simple (``noise_scale.csv``: the
    ratio of the two estimates' sums over the cell's seeds and updates so far). A table
    without a row (no cell recorded one: every step had a single group) still gives a
    figure that says so.
    """
    rows = formatting.records(df) if df is not None else []
    fig, ax = _figure(1, width=7.2)
    cells = {}
    for r in rows:
        cells.setdefault((r["rank"], r["batch_size"], r["lr"], bool(r["is_control"])), []).append(
            (r["step"], r["b_simple"]))
    colors = _rank_colors([{"rank": key[0]} for key in cells]) if cells else {}
    styles = ["-", "--", ":", "-."]
    sizes = sorted({key[1] for key in cells})
    for (rank, batch_size, lr, control), points in sorted(cells.items()):
        points.sort()
        label = f"rank {rank}, bs {batch_size}, lr {formatting.lr(lr)}" + (" (control)" if control else "")
        ax.plot([p[0] for p in points], [p[1] for p in points], styles[sizes.index(batch_size) % len(styles)],
                color=colors[rank], label=label, linewidth=1.8 if not control else 1.0)
    if not cells:
        ax.text(0.5, 0.5, "no noise scale recorded\n(training.noise_scale 0, or one group per step)",
                ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("training step")
    ax.set_ylabel("B_noise = tr(S) / |G|^2 (prompt groups)\n(every update so far, the cell's seeds pooled)")
    ax.grid(True, alpha=0.3)
    _title(fig, "Gradient noise scale over training", note)
    return _save(fig, path)


def _figure(panels: int, width: float | None = None, height: float = 4.8):
    fig = Figure(figsize=(width or (6.4 * panels), height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    return fig, axes


def _title(fig: Figure, title: str, note: str | None) -> None:
    # The note carries device / base model, so a plot lifted out of the report
    # still says what it measured.
    fig.suptitle(title if not note else f"{title}\n{note}", fontsize=12 if not note else 11)


def _save(fig: Figure, path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return write_bytes(path, buffer.getvalue())


def _batch_axis(ax, rows: list[dict]) -> None:
    sizes = sorted({r["batch_size"] for r in rows})
    ax.set_xscale("log", base=2)
    # Batch sizes are powers of two in practice, but label exactly the measured ones.
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(size) for size in sizes])
    if len(sizes) == 1:
        ax.set_xlim(sizes[0] / 2, sizes[0] * 2)
    ax.set_xlabel("batch size (completions per step)")


def _short_cell(r: dict) -> str:
    return f"rank {r['rank']} bs {r['batch_size']}" + (" control" if r["is_control"] else "")


def _cell_label(r: dict) -> str:
    label = f"r{r['rank']} bs{r['batch_size']}\nlr {formatting.lr(r['lr'])}"
    return label + ("\ncontrol" if r["is_control"] else "")


def _rank_colors(rows: list[dict]) -> dict:
    palette = _palette()
    return {rank: palette[i % len(palette)] for i, rank in enumerate(sorted({r["rank"] for r in rows}))}


def _palette() -> list[str]:
    return ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22"]


def _series_label(key: tuple) -> str:
    names = {"rank": "rank", "batch_size": "bs", "lr": "lr", "mps": "MPS"}
    packing = dict(key).get("packing")
    # a fused pack is one process: MPS says nothing about it
    return ", ".join(str(v) if k == "packing" else f"{names[k]} {formatting.lr(v) if k == 'lr' else v}"
                     for k, v in key if not (k == "mps" and packing == "fused"))


def _table_rows(df, columns, what: str) -> list[dict]:
    rows = formatting.records(df)
    if not rows:
        raise LorasweepError(f"{what}: the table is empty, nothing to plot")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise LorasweepError(f"{what}: the table has no column(s) {', '.join(missing)}")
    return rows
