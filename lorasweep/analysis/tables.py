"""Table rows and their markdown / CSV forms. Formats what ``metrics`` computed; decides nothing.

The lr-scaling table keeps the study's columns exactly
(``bs | lr | avg steps to T | step_time | wall to T | speedup``), where avg steps
is the censoring-aware restricted mean of ``metrics``, and adds after them the
95% intervals, the seed spread, the count of censored runs and the count of
degenerate runs (``lorasweep.training.degeneracy``).
"""

import io

import pandas as pd
from tabulate import tabulate

from ..training import degeneracy
from .. import formatting
from . import inference, metrics


def degenerate_flags(samples_by_seed: dict, settings: dict) -> dict:
    """seed -> whether its held-out samples are degenerate, by the rule of ``settings`` (training.degeneracy)."""
    return {
        seed: degeneracy.is_degenerate(degeneracy.measure([s["completion"] for s in record["samples"]]),
                                       settings["max_distinct_flag"], settings["min_jaccard_flag"])
        for seed, record in sorted(samples_by_seed.items())
    }


def lr_scaling_rows(cells: list, base_batch_size: int, max_steps: int, early_steps: int = None,
                    group_size: int = None) -> list:
    """One row per cell: ``cells`` holds (Cell-like dict, CellOutcome, degenerate flags by seed) of one study.

    ``avg_steps`` is the censoring-aware estimate of ``metrics.steps_estimate`` (the
    restricted mean up to ``max_steps``), with its 95% interval beside it;
    ``early_reward`` the mean over seeds of each seed's reward over its first
    ``early_steps`` steps, with its own. A cell whose workers recorded no samples
    (made before they did) has no flags.
    """
    rows = []
    for cell, outcome, flags in cells:
        steps = outcome.converged
        observations = metrics.seed_observations(outcome.workers, max_steps)
        estimate = metrics.steps_estimate(observations, max_steps)
        wall = metrics.wall_interval(estimate, outcome.step_time)
        early = [v for v in metrics.early_rewards(outcome.workers) if v is not None]
        early_estimate = inference.mean_interval(early, lower=0.0) if early else None
        noise = {phase: [(w.noise or {}).get(phase) for w in outcome.workers] for phase in ("early", "late", "all")}
        rows.append({
            "rank": cell["rank"],
            "batch_size": cell["batch_size"],
            "lr": cell["lr"],
            "is_control": bool(cell["control"]),
            "n": cell["n"],
            # no seed reached the target: the restricted mean is the horizon itself, not an estimate
            "avg_steps": estimate.value if estimate.reached else None,
            "min_steps": min(steps) if steps else None,
            "max_steps": max(steps) if steps else None,
            "censored": outcome.censored,
            "steps_per_seed": metrics.format_seed_outcomes(observations),
            "step_time": outcome.step_time,
            "wall": wall[0] if wall else None,
            **_interval_columns(estimate, wall),
            "early_steps": early_steps,
            "early_reward": early_estimate.mean if early_estimate else None,
            "early_lo": early_estimate.low if early_estimate else None,
            "early_hi": early_estimate.high if early_estimate else None,
            # every seed's value, as steps_per_seed: the verdicts compare cells from these
            "early_per_seed": metrics.format_seed_values(early) if len(early) == len(observations) else None,
            # the gradient noise scale of each seed, in groups (docs/numbers.md, definition 8), where recorded
            **{f"noise_{phase}_{part}_per_seed": _noise_column(values, index)
               for phase, values in noise.items() for index, part in enumerate(("g2", "trace"))},
            "groups": cell["batch_size"] // group_size if group_size else None,
            "_observations": observations,
            "degenerate": sum(flags.values()) if flags else None,
            "judged": len(flags),
        })
    # speedup = wall of the baseline batch size (same rank, scaled, not a control) / wall of the cell
    for row in rows:
        base = [r for r in rows if r["rank"] == row["rank"] and r["batch_size"] == base_batch_size and not r["is_control"]]
        base_wall = base[0]["wall"] if base else None
        row["speedup"] = base_wall / row["wall"] if base_wall and row["wall"] else None
        row["speedup_lo"] = row["speedup_hi"] = None
        row["is_reference"] = bool(base) and base[0] is row
        if row["speedup"] is not None and base[0] is not row:  # the base row is the reference, 1x by definition
            ratio = metrics.speedup_interval(base[0]["_observations"], base[0]["step_time"],
                                             row["_observations"], row["step_time"], max_steps)
            row["speedup_lo"], row["speedup_hi"] = ratio[1], ratio[2]
    for row in rows:
        del row["_observations"]
    rows.sort(key=lambda r: (r["rank"], r["is_control"], r["batch_size"], r["lr"]))
    return rows


def _noise_column(pairs: list, index: int):
    """One part of each seed's noise-scale means, "nan" for a seed that recorded none; None when no seed did."""
    if all(p is None for p in pairs):
        return None
    return metrics.format_seed_values([float("nan") if p is None else p[index] for p in pairs])


def _interval_columns(estimate, wall) -> dict:
    return {
        "steps_lo": estimate.low if estimate.reached else None,
        "steps_hi": estimate.high if estimate.reached else None,
        "wall_lo": wall[1] if wall and wall[1] is not None else None,
        "wall_hi": wall[2] if wall and wall[2] is not None else None,
        "horizon": estimate.horizon,
        "interval_note": estimate.interval_note,
    }


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


def _interval(low, high, unit: str = "", digits: int = 0) -> str:
    if low is None or high is None:
        return "—"
    return f"[{low:.{digits}f}{unit}, {high:.{digits}f}{unit}]"


def _steps_interval(row: dict) -> str:
    if row["avg_steps"] is None:
        return "—"
    note = row.get("interval_note")
    if row["steps_lo"] is None:
        return f"— ({note})" if note else "—"
    return _interval(row["steps_lo"], row["steps_hi"])


def _early_cell(row: dict) -> str:
    """The early reward with its interval: '0.512 [0.498, 0.526]'."""
    value = row.get("early_reward")
    if not formatting.is_finite(value):
        return "—"
    low, high = row.get("early_lo"), row.get("early_hi")
    if not (formatting.is_finite(low) and formatting.is_finite(high)):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _wall_interval(row: dict) -> str:
    if row["wall_lo"] is None:
        return "—"
    digits = 0 if row["wall_lo"] >= 10 else 1
    return _interval(row["wall_lo"], row["wall_hi"], "s", digits)


def _speedup_interval(row: dict) -> str:
    if row["speedup"] is not None and row.get("is_reference"):
        return "(reference)"
    if row["speedup"] is not None and row["speedup_lo"] is None:
        return "— (too few seeds to bound it)"
    return _interval(row["speedup_lo"], row["speedup_hi"], "x", 2)


def estimates_note(rows: list, max_steps: int) -> str:
    """What the estimate and the intervals of an lr-scaling table are, stated under it."""
    seeds = sorted({r["n"] for r in rows})
    fewest = inference.fewest_seeds_to_resolve()
    confidence = f"{inference.CONFIDENCE:.0%}"
    early = sorted({r["early_steps"] for r in rows if formatting.is_finite(r.get("early_steps"))})
    text = (
        f"avg steps to target: restricted mean up to max_steps = {max_steps} (Kaplan–Meier) over seeds; "
        f"a seed that did not reach the target counts as {max_steps} steps (censored: its own count is larger). "
        "wall = avg steps × step_time, with step_time as measured (no interval of its own). "
        f"Intervals of one cell (steps, wall{', early reward' if early else ''}): {confidence} Student-t over its "
        "seeds' values. Speedup interval: Fieller's interval for the ratio of the two cells' mean walls (Welch "
        "degrees of freedom); a dash where the seeds cannot bound it."
    )
    if early:
        text += (f" early reward: each seed's mean batch reward over its first {'/'.join(map(str, early))} steps, "
                 "averaged over seeds.")
    if seeds and seeds[0] < fewest:
        text += (f" With {'/'.join(map(str, seeds))} seed(s) per cell no comparison of two cells can be resolved at "
                 f"{confidence}: the exact test's smallest possible p-value is "
                 f"{inference.smallest_p_value(seeds[0], seeds[0]):.2f}.")
    return text


def lr_scaling_markdown(rows: list, target: float, max_steps: int, degeneracy_settings: dict,
                        base_samples: dict = None) -> str:
    t = _threshold(target)
    early_steps = next((r["early_steps"] for r in rows if formatting.is_finite(r.get("early_steps"))), None)
    headers = ["bs", "lr", f"avg steps to {t}", "step_time", f"wall to {t}", "speedup",
               "steps 95% CI", "wall 95% CI", "speedup 95% CI",
               f"reward, first {early_steps} steps [95% CI]" if early_steps else "early reward",
               "steps min–max", "censored", "degenerate"]
    sequential = any(row.get("seeds_reason") for row in rows)  # a sequential study: why each cell has its seeds
    if sequential:
        headers = headers + ["seeds"]
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
            _steps_interval(row),
            _wall_interval(row),
            _speedup_interval(row),
            _early_cell(row),
            spread,
            f"{row['censored']}/{row['n']}",
            "—" if not row["judged"] else f"{row['degenerate']}/{row['judged']}",
        ] + ([f"{row['n']} ({row['seeds_reason'] or 'running'})"] if sequential else []))
    table = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    if any(r["censored"] and r["avg_steps"] is not None for r in rows):
        table += ("\n\n\\* some seeds did not reach the target: they count as reaching it no sooner than "
                  f"max_steps ({max_steps}), so the average and the wall are lower bounds for that cell.")
    table += f"\n\n{degeneracy.rule_text(degeneracy_settings)} (samples: results/tables/samples.md)."
    if base_samples:
        table += f" {degeneracy.base_reference_text(base_samples, degeneracy_settings)}."
    return table + "\n\n" + estimates_note(rows, max_steps)


def samples_markdown(cells: list, settings: dict, per_seed: int = 2, base_samples: dict = None) -> str:
    """A few held-out samples per seed of each cell, with the seed's measures and flag.

    ``cells`` holds (Cell-like dict, samples by seed) of one study; ``settings``
    is training.degeneracy. When a seed's samples were taken is what its worker
    recorded, which a re-aggregation at another target does not change.
    ``base_samples``, the untrained base sampled alike, comes first: the reference.
    """
    sections = []
    if base_samples:
        sections.append("\n".join([
            "### the base model, untrained (the reference)", "",
            f"{degeneracy.base_reference_text(base_samples, settings)}.", "",
            "```", *_sample_lines(base_samples["samples"][:per_seed]), "```", ""]))
    for cell, samples_by_seed in sorted(cells, key=lambda c: (c[0]["rank"], bool(c[0]["control"]),
                                                              c[0]["batch_size"], c[0]["lr"])):
        title = f"### rank {cell['rank']}, bs {cell['batch_size']}, lr {formatting.lr(cell['lr'])}"
        lines = [title + (" (no scaling)" if cell["control"] else ""), ""]
        if not samples_by_seed:
            lines += ["no samples recorded", ""]
        for seed, record in sorted(samples_by_seed.items()):
            m = degeneracy.measure([s["completion"] for s in record["samples"]])
            flagged = degeneracy.is_degenerate(m, settings["max_distinct_flag"], settings["min_jaccard_flag"])
            when = (f"it reached its target {record['target']:g}" if record["reached_target"]
                    else f"its last step, short of its target {record['target']:g}")
            lines += [
                f"seed {seed}, after step {record['step']} ({when}): {m['distinct_first']} of {m['samples']} first "
                f"sentences distinct, mean Jaccard {m['jaccard']:.3f}, distinct-2 {m['distinct_2']:.3f} · "
                + ("**degenerate**" if flagged else "not flagged"),
                "",
                "```",
                *_sample_lines(record["samples"][:per_seed]),
                "```",
                "",
            ]
        sections.append("\n".join(lines))
    return "\n".join(sections)


def _sample_lines(samples: list) -> list:
    """``prompt | completion`` per sample; a fence inside a text would end the block early."""
    return [f"{s['prompt']} | {s['completion']}".replace("`", "'") for s in samples]


def to_csv(rows: list, columns: list = None) -> str:
    """CSV of ``rows``; ``columns`` gives the header when there may be no row."""
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=columns).to_csv(buffer, index=False)
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


def packing_comparison_markdown(rows: list) -> str:
    """Per (rank, bs, lr) measured both ways: ``n | processes | fused | fused / processes`` (agg. steps/s).

    ``rows`` are ``throughput_rows`` results carrying ``packing``; levels measured one way
    only show a dash on the other side. Empty when no series was measured both ways.
    """
    by_series = {}
    for row in rows:
        key = (row["rank"], row["batch_size"], row["lr"])
        by_series.setdefault(key, {}).setdefault(row.get("packing", "processes"), {})[row["n"]] = row
    body = []
    for (rank, batch_size, lr), packs in sorted(by_series.items()):
        if set(packs) != {"processes", "fused"}:
            continue
        for n in sorted(set(packs["processes"]) | set(packs["fused"])):
            proc, fused = packs["processes"].get(n), packs["fused"].get(n)
            ratio = f"{fused['agg_steps_per_s'] / proc['agg_steps_per_s']:.2f}x" if proc and fused else "—"
            body.append([f"r{rank} bs {batch_size} lr {formatting.lr(lr)}", n,
                         f"{proc['agg_steps_per_s']:.2f}" if proc else "—",
                         f"{fused['agg_steps_per_s']:.2f}" if fused else "—", ratio])
    if not body:
        return ""
    headers = ["series", "runs", "processes (steps/s)", "fused (steps/s)", "fused / processes"]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


# ---- the report's first page: the study's columns with their intervals, compact ----


def headline_table(rows: list, target: float, max_steps: int, tablefmt: str = "html") -> str:
    """One rank's lr-scaling rows as ``bs | lr | avg steps | step_time | wall | speedup``, each with its 95% interval."""
    t = _threshold(target)

    def with_interval(value: str, interval: str) -> str:
        return value if interval.startswith("—") or interval == "(reference)" else f"{value} {interval}"

    body = []
    for row in rows:
        lr = formatting.lr(row["lr"]) + (" (no scaling)" if row["is_control"] else "")
        body.append([
            row["batch_size"],
            lr,
            with_interval(_steps_cell(row, max_steps), _steps_interval(row)) if row["avg_steps"] is not None
            else _steps_cell(row, max_steps),
            "—" if row["step_time"] is None else f"{row['step_time']:.2f}s",
            with_interval(_seconds(row["wall"]), _wall_interval(row)),
            "—" if row["speedup"] is None else
            with_interval(f"{row['speedup']:.1f}x" + ("*" if row["censored"] else ""), _speedup_interval(row)),
        ])
    headers = ["bs", "lr", f"avg steps to {t} [95% CI]", "step_time", f"wall to {t} [95% CI]", "speedup [95% CI]"]
    return tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)
