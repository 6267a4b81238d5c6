"""Practical recommendations, derived from the measured tables by stated rules.

The study wrote its recommendations by hand ("best efficiency at 6 concurrent,
max throughput at 12"). Here each one is the output of a rule whose threshold is
a named constant below and whose wording is printed next to the figures it used,
so a reader can check the pick and a new measurement can change it.

Input rows are plain dicts (a DataFrame's ``to_dict("records")`` works too):
- concurrency rows, one series (one rank, bs, lr): ``n``, ``step_time``,
  ``agg_steps_per_s``, ``efficiency`` as computed by ``lorasweep.analysis.throughput``;
- lr_scaling rows: ``rank``, ``batch_size``, ``lr``, ``avg_steps``, ``step_time``,
  ``wall``, ``censored`` (number of censored seeds), ``is_control``; the verdicts
  also read ``steps_per_seed`` ("220 >300") and ``horizon`` (max_steps).

Worked example, the study's rank 32 / bs 128 series (steps/s: 3.75, 6.67, 10.4,
10.2 at n = 3, 6, 12, 18; efficiency 1.00, 0.89, 0.70, 0.55):
- best efficiency: 6 keeps 89% of linear scaling, 12 keeps only 70% -> 6;
- max throughput: the peak is 10.4 at 12 and nothing smaller is within 5% -> 12;
- nothing gained past: from 12, going to 18 *loses* throughput, while from 6
  each added worker still buys 0.63 steps/s, half a lone worker's 1.25 -> 12.
"""

import math

from .. import formatting
from . import inference, metrics, noise_scale
from ..errors import LorasweepError

# A level is "efficient" while each worker keeps at least this share of the speed
# it had at the lowest level, i.e. aggregate throughput stays within 20% of linear
# scaling. On the study's numbers the margin is wide both ways (6: 0.89, 12: 0.70).
EFFICIENCY_FLOOR = 0.80

# Levels whose throughput is within this fraction of the measured peak deliver the
# peak as far as a run-to-run measurement can tell; the smallest of them is the
# one to use, because extra workers cost memory and per-run latency.
PEAK_TOLERANCE = 0.05

# Past a level, adding workers is pointless when each added worker buys less than
# this share of what one worker delivers at the lowest level.
SATURATION_MARGINAL_SHARE = 0.10


def recommend_concurrency(rows) -> dict:
    """Best-efficiency, max-throughput and saturation levels of one concurrency series."""
    levels = _concurrency_levels(rows)
    lowest = levels[0]
    per_worker_lowest = float(lowest["agg_steps_per_s"] / lowest["n"])
    series = {key: _plain(lowest[key]) for key in ("rank", "batch_size", "lr", "packing") if key in lowest}
    return {
        "series": series,
        "levels": [_plain(level["n"]) for level in levels],
        "best_efficiency": _best_efficiency(levels),
        "max_throughput": _max_throughput(levels),
        "saturation": _saturation(levels, per_worker_lowest),
    }


def _concurrency_levels(rows) -> list[dict]:
    rows = formatting.records(rows)
    if not rows:
        raise LorasweepError("concurrency table is empty: no level to recommend from")
    for row in rows:
        for key in ("n", "step_time", "agg_steps_per_s", "efficiency"):
            if key not in row or not formatting.is_finite(row[key]):
                raise LorasweepError(f"concurrency row {row!r}: '{key}' is missing or not a number")
    levels = sorted(rows, key=lambda row: row["n"])
    ns = [level["n"] for level in levels]
    if len(set(ns)) != len(ns):
        raise LorasweepError(f"concurrency levels {ns} repeat a level: pass one series (rank, bs, lr) at a time")
    return levels


def _best_efficiency(levels: list[dict]) -> dict:
    chosen, stopped_by = levels[0], None
    for level in levels[1:]:
        # A prefix walk, not a filter: a level after a collapse does not count
        # even if noise lifts its efficiency back over the floor.
        if level["efficiency"] < EFFICIENCY_FLOOR or level["agg_steps_per_s"] <= chosen["agg_steps_per_s"]:
            stopped_by = level
            break
        chosen = level
    figures = _figures(chosen)
    if stopped_by is not None:
        figures["next_level"] = _figures(stopped_by)
    return {
        "level": _plain(chosen["n"]),
        "figures": figures,
        "rule": (
            "the largest level up to which every added level still raises aggregate throughput "
            f"and keeps at least {EFFICIENCY_FLOOR:.0%} of linear scaling from the lowest level "
            f"(efficiency >= {EFFICIENCY_FLOOR:.2f})"
        ),
    }


def _max_throughput(levels: list[dict]) -> dict:
    peak = max(levels, key=lambda level: level["agg_steps_per_s"])
    bar = (1 - PEAK_TOLERANCE) * peak["agg_steps_per_s"]
    chosen = next(level for level in levels if level["agg_steps_per_s"] >= bar)
    figures = _figures(chosen)
    figures["peak"] = _figures(peak)
    return {
        "level": _plain(chosen["n"]),
        "figures": figures,
        "rule": (
            "the smallest level whose aggregate throughput is within "
            f"{PEAK_TOLERANCE:.0%} of the highest measured"
        ),
    }


def _saturation(levels: list[dict], per_worker_lowest: float) -> dict:
    floor = SATURATION_MARGINAL_SHARE * per_worker_lowest
    chosen, reached = levels[-1], False
    for index, level in enumerate(levels[:-1]):
        later = levels[index + 1:]
        if all(_marginal(level, other) < floor for other in later):
            chosen, reached = level, True
            break
    figures = _figures(chosen)
    figures["per_worker_lowest"] = per_worker_lowest
    figures["marginal_floor"] = floor
    if reached:
        figures["beyond"] = [
            dict(_figures(other), marginal_per_added_worker=_marginal(chosen, other))
            for other in levels
            if other["n"] > chosen["n"]
        ]
    return {
        "level": _plain(chosen["n"]),
        # False: throughput was still rising at the largest level measured (or only
        # one level was measured), so where it stops is not known yet.
        "reached": reached,
        "figures": figures,
        "rule": (
            "the smallest level from which every larger measured level adds less than "
            f"{SATURATION_MARGINAL_SHARE:.0%} of a lowest-level worker's throughput per added worker"
        ),
    }


def _marginal(level: dict, other: dict) -> float:
    """Aggregate steps/s gained per worker added going from ``level`` to ``other``."""
    return float((other["agg_steps_per_s"] - level["agg_steps_per_s"]) / (other["n"] - level["n"]))


def _figures(level: dict) -> dict:
    keys = ("n", "step_time", "agg_steps_per_s", "samples_per_s", "efficiency")
    return {key: _plain(level[key]) for key in keys if key in level}


def recommend_default(lr_rows) -> dict:
    """The (bs, lr) with the best wall to target per rank, and the linear-scaling summary."""
    rows = formatting.records(lr_rows)
    if not rows:
        raise LorasweepError("lr_scaling table is empty: no cell to recommend from")
    for row in rows:
        for key in ("rank", "batch_size", "lr", "wall", "censored", "is_control"):
            if key not in row:
                raise LorasweepError(f"lr_scaling row {row!r} has no '{key}'")
    ranks = sorted({row["rank"] for row in rows})
    per_rank = [_default_for_rank(rank, [row for row in rows if row["rank"] == rank]) for rank in ranks]
    picked = [pick for pick in per_rank if pick["cell"] is not None]
    # Across ranks, prefer picks that reached the target in every seed: a censored
    # wall is only a lower bound and cannot beat a measured one.
    overall = min(picked, key=lambda pick: (pick["censored_only"], pick["cell"]["wall"]), default=None)
    return {
        "per_rank": per_rank,
        "overall": overall,
        "linear_scaling": [summary for rank in ranks if (summary := _scaling_summary(rank, rows)) is not None],
        "rule": (
            "per rank, the batch size and lr with the shortest wall to target (avg steps x step_time) "
            "among cells whose seeds all reached the target, or among all cells if none did"
        ),
        "scaling_rule": (
            "speedup = wall to target at the smallest batch size / wall at the largest, "
            "both with the scaled lr; the control runs the largest batch size at the base lr"
        ),
    }


def _default_for_rank(rank, rows: list[dict]) -> dict:
    timed = [row for row in rows if formatting.is_finite(row["wall"])]
    converged = [row for row in timed if not row["censored"]]
    candidates = converged or timed
    pick = {
        "rank": _plain(rank),
        "censored_only": not converged and bool(timed),
        "considered": len(candidates),
        "excluded_censored": [_cell(row) for row in timed if row["censored"]] if converged else [],
        "cell": None,
    }
    if candidates:
        # Equal walls: the smaller batch size needs less memory for the same result.
        best = min(candidates, key=lambda row: (row["wall"], row["batch_size"]))
        pick["cell"] = _cell(best)
    return pick


def _scaling_summary(rank, rows: list[dict]):
    scaled = [row for row in rows if row["rank"] == rank and not row["is_control"] and formatting.is_finite(row["wall"])]
    if len({row["batch_size"] for row in scaled}) < 2:
        return None
    base = min(scaled, key=lambda row: row["batch_size"])
    largest = max(scaled, key=lambda row: row["batch_size"])
    # smaller scaled batch sizes where no seed reached the target have no wall to compare
    unreached = sorted(
        _plain(row["batch_size"]) for row in rows
        if row["rank"] == rank and not row["is_control"] and not formatting.is_finite(row["wall"])
        and row["batch_size"] < base["batch_size"]
    )
    summary = {
        "rank": _plain(rank),
        "base": _cell(base),
        "largest": _cell(largest),
        "speedup": float(base["wall"] / largest["wall"]),
        "control": None,
        "unreached_smaller": unreached,
    }
    controls = [
        row
        for row in rows
        if row["rank"] == rank
        and row["is_control"]
        and row["batch_size"] == largest["batch_size"]
        and formatting.is_finite(row["wall"])
    ]
    if controls:
        control = min(controls, key=lambda row: row["wall"])
        summary["control"] = dict(_cell(control), speedup=float(base["wall"] / control["wall"]))
    return summary


def _cell(row: dict) -> dict:
    keys = ("rank", "batch_size", "lr", "avg_steps", "step_time", "wall", "censored", "is_control")
    return {key: _plain(row[key]) for key in keys if key in row}


# ---- verdicts: does the run support the study's two claims? ------------------------------------

def verdict_rule() -> str:
    fewest = inference.fewest_seeds_to_resolve()
    return (
        f"each claim is decided by an exact two-sided permutation test of the difference of the two cells' mean "
        f"per-seed values (steps capped at max_steps; steps x measured step time for wall; the reward over the first "
        f"early steps): resolved when p <= {inference.ALPHA:.2f}, so a claim with no true difference behind it (both "
        f"cells' seeds from one distribution) is called resolved at most {inference.ALPHA:.0%} of the time, at any "
        f"number of seeds; each claim is tested on its own. The interval is the set of shifts the same test does not "
        f"reject. Below {fewest} seeds per cell the test cannot reach p <= {inference.ALPHA:.2f} whatever the seeds "
        f"show. Seeds that would resolve it: the n per cell with an {inference.PLANNING_POWER:.0%} chance at the "
        f"difference and spread observed (normal approximation, at least {fewest})"
    )


def recommend_verdicts(lr_rows, alpha: float = inference.ALPHA) -> list:
    """Per rank: (a) the scaled largest batch needs fewer steps than the base batch; (b) the
    unscaled control is slower than the scaled cell at its batch size, in steps and in wall;
    and the same claims read off the early reward (higher for the faster learner).

    Each claim is an ``inference.compare`` of the two cells' per-seed values; rows
    without per-seed outcomes (tables from before they were recorded) give no verdict.
    """
    rows = [row for row in formatting.records(lr_rows) if _has_seeds(row)]
    verdicts = []
    for rank in sorted({row["rank"] for row in rows}):
        scaled = sorted((r for r in rows if r["rank"] == rank and not r["is_control"]), key=lambda r: r["batch_size"])
        if len(scaled) < 2:
            continue
        base, largest = scaled[0], scaled[-1]
        what = (f"bs {largest['batch_size']} with scaled lr {formatting.lr(largest['lr'])} {{}} than bs "
                f"{base['batch_size']} (lr {formatting.lr(base['lr'])})")
        claims = [_claim("fewer_steps", what.format("needs fewer steps"), base, largest, alpha=alpha)]
        if _has_early(base) and _has_early(largest):
            claims.append(_claim("higher_early_reward", what.format(f"gains more reward over its first "
                                                                    f"{_early_steps(base)} steps"), largest, base,
                                 value="early", alpha=alpha))
        same_batch = {r["batch_size"]: r for r in scaled}
        for control in sorted((r for r in rows if r["rank"] == rank and r["is_control"]), key=lambda r: r["batch_size"]):
            twin = same_batch.get(control["batch_size"])
            if twin is None:
                continue
            what = (f"the control (bs {control['batch_size']}, unscaled lr {formatting.lr(control['lr'])}) {{}} "
                    f"than the scaled lr {formatting.lr(twin['lr'])}")
            claims.append(_claim("control_more_steps", what.format("needs more steps"), control, twin, alpha=alpha))
            if formatting.is_finite(control.get("step_time")) and formatting.is_finite(twin.get("step_time")):
                claims.append(_claim("control_more_wall", what.format("needs more wall time"), control, twin,
                                     value="wall", alpha=alpha))
            if _has_early(control) and _has_early(twin):
                text = (f"the scaled lr {formatting.lr(twin['lr'])} gains more reward over its first "
                        f"{_early_steps(twin)} steps than the control (bs {control['batch_size']}, unscaled lr "
                        f"{formatting.lr(control['lr'])})")
                claims.append(_claim("control_lower_early_reward", text, twin, control, value="early", alpha=alpha))
        verdicts.append({"rank": _plain(rank), "claims": claims})
    return verdicts


def _has_seeds(row: dict) -> bool:
    return isinstance(row.get("steps_per_seed"), str) and bool(row["steps_per_seed"].strip()) and formatting.is_finite(row.get("horizon"))


def _has_early(row: dict) -> bool:
    return isinstance(row.get("early_per_seed"), str) and bool(row["early_per_seed"].strip())


def _early_steps(row: dict) -> int:
    return int(row["early_steps"])


def seed_values(row: dict, value: str = "steps") -> list:
    """A cell's per-seed values of one statistic: capped steps, walls (steps x step time) or early rewards."""
    if value == "early":
        return metrics.parse_seed_values(row["early_per_seed"])
    capped = metrics.capped_steps(metrics.parse_seed_outcomes(row["steps_per_seed"]), int(row["horizon"]))
    scale = float(row["step_time"]) if value == "wall" else 1.0
    return [v * scale for v in capped]


UNITS = {"steps": "steps", "wall": "s", "early": "reward"}


def cell_key(row: dict) -> list:
    """A table row's cell as a sequential study names it: [rank, batch size, lr, control]."""
    return [_plain(row["rank"]), _plain(row["batch_size"]), float(row["lr"]), bool(row["is_control"])]


def _claim(key: str, text: str, larger: dict, smaller: dict, value: str = "steps",
           alpha: float = inference.ALPHA) -> dict:
    """The claim that ``larger``'s mean per-seed value exceeds ``smaller``'s, resolved at p <= ``alpha``."""
    comparison = inference.compare(seed_values(larger, value), seed_values(smaller, value), alpha)
    if not comparison.can_resolve:
        status = "cannot resolve"
    elif not comparison.resolved:
        status = "not resolved"
    else:
        status = "supported" if comparison.difference > 0 else "contradicted"
    return {
        "claim": key,
        "text": text,
        "unit": UNITS[value],
        "status": status,
        "resolved": comparison.resolved,
        "estimates": [comparison.first_mean, comparison.second_mean],
        "difference": comparison.difference,
        "interval": [comparison.low, comparison.high],
        "p_value": comparison.p_value,
        "smallest_p": inference.smallest_p_value(comparison.n_first, comparison.n_second),
        "seeds": [comparison.n_first, comparison.n_second],
        "seeds_needed": comparison.seeds_needed,
        "alpha": alpha,
        "cells": [cell_key(larger), cell_key(smaller)],
        "test": "exact permutation test" if math.comb(sum((comparison.n_first, comparison.n_second)),
                                                       comparison.n_first) <= inference.EXACT_SPLITS_LIMIT
        else f"permutation test ({inference.RANDOM_SPLITS} random splits)",
    }


def _seed_count(claim: dict) -> str:
    first, second = claim["seeds"]
    return f"{first} seeds per cell" if first == second else f"{first} and {second} seeds"


def _verdict_lines(verdicts: list) -> list[str]:
    lines = []
    for verdict in verdicts:
        for claim in verdict["claims"]:
            unit = claim["unit"]
            a, b = claim["estimates"]
            numbers = _reward if unit == "reward" else _num
            suffix = "" if unit == "reward" else f" {unit}"
            figures = f"{numbers(a)} vs {numbers(b)}{suffix}, difference {numbers(claim['difference'])}{suffix}"
            low, high = claim["interval"]
            alpha = claim.get("alpha", inference.ALPHA)
            if math.isfinite(low) and math.isfinite(high):  # the interval of the test that decided: 1 - alpha
                figures += f" ({_confidence(alpha)} CI {numbers(low)} to {numbers(high)})"
            how = f"{claim['test']}, {_seed_count(claim)}"
            bar = "" if alpha == inference.ALPHA else f" <= {alpha:.3g}"
            if claim.get("look"):
                how += f", look {claim['look']} of {claim['looks']}"
            if claim["status"] == "cannot resolve":
                text = (f"cannot be resolved with {_seed_count(claim)}: the smallest p-value the exact test can give "
                        f"there is {claim['smallest_p']:.2f}{' (above ' + format(alpha, '.3g') + ')' if bar else ''}, "
                        f"so no interval is given — {figures}; at least "
                        f"{inference.fewest_seeds_to_resolve(alpha)} seeds per cell are needed")
            elif claim["resolved"]:
                outcome = "resolved, it holds" if claim["status"] == "supported" else "resolved, the opposite holds"
                text = f"{outcome} ({how}, p = {_p(claim['p_value'])}{bar}) — {figures}"
            else:
                text = (f"not resolved ({how}, p = {_p(claim['p_value'])}{' > ' + format(alpha, '.3g') if bar else ''}: "
                        f"the seeds are consistent with no difference) — {figures}")
                if claim["seeds_needed"] is None:
                    text += "; no difference observed, so no number of seeds is predicted to resolve it"
                else:
                    text += (f"; about {claim['seeds_needed']} seeds per cell would resolve a difference this large "
                             f"with {inference.PLANNING_POWER:.0%} probability at the spread observed")
            lines.append(f"- **Verdict, rank {verdict['rank']}**: {claim['text']}: {text}.")
    if lines:
        lines.append(f"  Rule: {verdict_rule()}.")
    return lines + [""] if lines else []


def _confidence(alpha: float) -> str:
    level = 100 * (1 - alpha)
    return f"{level:.0f}%" if abs(level - round(level)) < 1e-9 else f"{level:.1f}%"


def _p(value: float) -> str:
    """Three significant digits: a p-value of 0.0498 must not print as 0.05, the bar it passed."""
    return f"{value:.3g}" if value >= 0.001 else f"{value:.2e}"


def _reward(value: float) -> str:
    return f"{value:.3f}"


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


def render_markdown(conc_rec, default_rec, verdicts=None, noise=None, sequential_rule: str = None) -> str:
    """The "Practical recommendations" section.

    ``conc_rec`` is one ``recommend_concurrency`` result, a list of them (one per
    series, e.g. bs 128 and bs 32), or None; ``default_rec`` a ``recommend_default``
    result or None; ``verdicts`` a ``recommend_verdicts`` result or None. Each item
    gives its pick, the figures behind it and its rule.
    """
    lines = ["## Practical recommendations", ""]
    if default_rec:
        lines += _default_lines(default_rec)
    if verdicts:
        lines += _verdict_lines(verdicts)
        if sequential_rule:
            lines.insert(len(lines) - 1, f"  Sequential: {sequential_rule}.")
    if noise:
        lines += _noise_lines(noise)
    conc_recs = [] if conc_rec is None else [conc_rec] if isinstance(conc_rec, dict) else list(conc_rec)
    for rec in conc_recs:
        lines += _concurrency_lines(rec)
    if len(lines) == 2:
        lines.append("No measurements to recommend from.")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _default_lines(rec: dict) -> list[str]:
    lines = []
    for pick in rec["per_rank"]:
        cell = pick["cell"]
        if cell is None:
            lines.append(f"- **Default config, rank {pick['rank']}**: none — no cell has a wall to target.")
            continue
        caveat = " (every cell had censored seeds: a lower bound)" if pick["censored_only"] else ""
        excluded = len(pick["excluded_censored"])
        skipped = f"; {excluded} cell(s) with censored seeds left out" if excluded else ""
        lines.append(
            f"- **Default config, rank {pick['rank']}**: bs {cell['batch_size']}, lr {formatting.lr(cell['lr'])}"
            f"{' (control, no lr scaling)' if cell['is_control'] else ''} — "
            f"{_fmt_s(cell['wall'])} to target{_steps_times(cell)}{caveat}{skipped}."
        )
    lines.append(f"  Rule: {rec['rule']}.")
    for summary in rec["linear_scaling"]:
        base, largest, control = summary["base"], summary["largest"], summary["control"]
        text = (
            f"- **Linear LR scaling, rank {summary['rank']}**: bs {base['batch_size']} → {largest['batch_size']} "
            f"with lr {formatting.lr(base['lr'])} → {formatting.lr(largest['lr'])}: {summary['speedup']:.1f}x "
            f"({_fmt_s(base['wall'])} → {_fmt_s(largest['wall'])})"
        )
        if control:
            text += (
                f"; without scaling (bs {control['batch_size']}, lr {formatting.lr(control['lr'])}): "
                f"{control['speedup']:.1f}x ({_fmt_s(control['wall'])})"
            )
        if any(cell and cell.get("censored") for cell in (base, largest, control)):
            text += "; some of these cells had censored seeds, so their walls are lower bounds"
        if summary.get("unreached_smaller"):
            sizes = ", ".join(f"bs {b}" for b in summary["unreached_smaller"])
            text += f"; no seed of {sizes} reached the target, so the comparison starts at bs {base['batch_size']}"
        lines.append(text + ".")
    if rec["linear_scaling"]:
        lines.append(f"  Rule: {rec['scaling_rule']}.")
    return lines + [""]


def _concurrency_lines(rec: dict) -> list[str]:
    series = rec["series"]
    label = ", ".join(
        f"{name} {formatting.lr(series[key]) if key == 'lr' else series[key]}"
        for key, name in (("rank", "rank"), ("batch_size", "bs"), ("lr", "lr"))
        if key in series
    ) + (f", {series['packing']}" if "packing" in series else "")
    lines = [f"Concurrency ({label}; levels {', '.join(map(str, rec['levels']))}):" if label else "Concurrency:", ""]

    best = rec["best_efficiency"]
    fig = best["figures"]
    text = f"- **Best efficiency**: {best['level']} concurrent — efficiency {fig['efficiency']:.2f}, {_fmt_tp(fig)}"
    if "next_level" in fig:
        nxt = fig["next_level"]
        text += f"; {nxt['n']} drops to efficiency {nxt['efficiency']:.2f}, {_fmt_tp(nxt)}"
    lines += [text + ".", f"  Rule: {best['rule']}."]

    top = rec["max_throughput"]
    fig = top["figures"]
    peak = fig["peak"]
    text = (
        f"- **Max aggregate throughput**: {top['level']} concurrent — "
        f"{_fmt_tp(fig)} at {fig['step_time']:.2f} s/step"
    )
    if peak["n"] != top["level"]:
        text += f" (measured peak {_fmt_tp(peak)} at {peak['n']})"
    lines += [text + ".", f"  Rule: {top['rule']}."]

    sat = rec["saturation"]
    fig = sat["figures"]
    if sat["reached"]:
        beyond = ", ".join(
            f"{other['n']}: {_fmt_tp(other)} ({other['marginal_per_added_worker']:+.2g} steps/s per added worker)"
            for other in fig["beyond"]
        )
        text = (
            f"- **Nothing gained past**: {sat['level']} concurrent — {_fmt_tp(fig)}; beyond it {beyond}, "
            f"against {fig['per_worker_lowest']:.3g} steps/s for one worker at the lowest level"
        )
    elif len(rec["levels"]) == 1:
        text = f"- **Nothing gained past**: not known — only one level ({sat['level']}) was measured"
    else:
        text = (
            f"- **Nothing gained past**: not reached — throughput still grows at the largest level measured "
            f"({sat['level']}: {_fmt_tp(fig)}); measure higher levels"
        )
    lines += [text + ".", f"  Rule: {sat['rule']}.", ""]
    return lines


def _steps_times(cell: dict) -> str:
    if formatting.is_finite(cell.get("avg_steps")) and formatting.is_finite(cell.get("step_time")):
        return f" ({cell['avg_steps']:.0f} steps × {cell['step_time']:.2f} s)"
    return ""


def _fmt_tp(fig: dict) -> str:
    return f"{fig['agg_steps_per_s']:.3g} steps/s"


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


def _plain(value):
    # numpy scalars (from DataFrames) become Python numbers, so results dump to JSON.
    return value.item() if hasattr(value, "item") else value


# ---- the gradient noise scale: the prediction beside the measurement ----------------------------

NOISE_RULE = (
    "B_noise is the gradient noise scale tr(S) / |G|^2 in prompt groups (McCandlish et al. 2018, Appendix A): "
    "per recorded update the two unbiased estimates from the small and the full batch's gradients, averaged over "
    "each seed's updates (early: the first half of its steps, late: the second, and all), then the ratio of their "
    "means over the seeds of the rank's lr-scaled cells with at least two groups a step, with Fieller's 95% "
    "interval; unbounded above when |G|^2 is not clearly above 0, i.e. the noise dominates. The model "
    "S(B) = S_min (1 + B_noise / B) predicts steps(B1) / steps(B2) = (1 + B_noise / B1) / (1 + B_noise / B2), "
    "at most B2 / B1; the measured ratio of restricted mean steps comes with Fieller's 95% interval. They agree "
    "when the two intervals overlap (a lenient test); the model assumes each batch size trains at its best lr, "
    "which linear scaling only approximates"
)


def _noise_pairs(rows: list, phase: str) -> list:
    pairs = []
    for row in rows:
        g2 = metrics.parse_seed_values(row.get(f"noise_{phase}_g2_per_seed"))
        trace = metrics.parse_seed_values(row.get(f"noise_{phase}_trace_per_seed"))
        pairs += [(g, t) for g, t in zip(g2, trace) if math.isfinite(g) and math.isfinite(t)]
    return pairs


def recommend_noise(lr_rows) -> list:
    """Per rank: B_noise (early, late, all) with intervals, the predicted and the measured step ratio, a verdict."""
    rows = [r for r in formatting.records(lr_rows) if _has_seeds(r)]
    out = []
    for rank in sorted({r["rank"] for r in rows}):
        scaled = sorted((r for r in rows if r["rank"] == rank and not r["is_control"]), key=lambda r: r["batch_size"])
        if len(scaled) < 2 or not all(formatting.is_finite(r.get("groups")) for r in scaled):
            continue
        measured_in = [r for r in scaled if _noise_pairs([r], "all")]
        if not measured_in:
            continue
        estimates = {phase: noise_scale.pooled(_noise_pairs(measured_in, phase)) for phase in noise_scale.PHASES}
        base, largest = scaled[0], scaled[-1]
        b1, b2 = float(base["groups"]), float(largest["groups"])
        every = estimates["all"]
        if every is None or every["low"] is None:
            predicted = [None, None, None]
        else:
            centre = every["value"] if every["value"] is not None else math.inf
            predicted = [noise_scale.predicted_step_ratio(max(0.0, v), b1, b2)
                         for v in (centre, every["low"], every["high"])]
        measured = inference.ratio_interval(seed_values(base), seed_values(largest))
        out.append({
            "rank": _plain(rank),
            "cells": [_plain(r["batch_size"]) for r in measured_in],
            "b_noise": estimates,
            "batch_sizes": [_plain(base["batch_size"]), _plain(largest["batch_size"])],
            "groups": [b1, b2],
            "predicted": predicted,
            "measured": list(measured),
            "agreement": _agreement(predicted, measured),
        })
    return out


def _agreement(predicted: list, measured: tuple) -> str:
    _, low, high = measured
    if low is None or high is None or predicted[1] is None:
        return "cannot tell"
    if high < predicted[1]:
        return "less than predicted"
    if low > predicted[2]:
        return "more than predicted"
    return "consistent"


def _noise_lines(noise: list) -> list:
    lines = []
    for item in noise:
        def phase(name):
            e = item["b_noise"][name]
            if e is None:
                return "not recorded"
            value = "not above 0 in |G|^2 (noise dominates)" if e["value"] is None else f"{e['value']:.3g}"
            if e["low"] is None:
                return f"{value} ({e['n']} seed)"
            high = "inf" if math.isinf(e["high"]) else f"{e['high']:.3g}"
            return f"{value} [95% CI {e['low']:.3g}, {high}] ({e['n']} seeds)"

        bs1, bs2 = item["batch_sizes"]
        p, (m, low, high) = item["predicted"], item["measured"]
        pred = "—" if p[0] is None else f"{p[0]:.2f}" + ("" if p[1] is None else f" [{p[1]:.2f}, {p[2]:.2f}]")
        meas = f"{m:.2f}" + ("" if low is None else f" [{low:.2f}, {high:.2f}]")
        verdict = {"consistent": "consistent with the prediction",
                   "less than predicted": "the larger batch saved fewer steps than predicted",
                   "more than predicted": "the larger batch saved more steps than predicted",
                   "cannot tell": "cannot tell: the seeds do not bound one of the two"}[item["agreement"]]
        lines.append(
            f"- **Noise scale, rank {item['rank']}**: B_noise in prompt groups, over training {phase('all')}; "
            f"first half of the steps {phase('early')}; second half {phase('late')} "
            f"(cells bs {', '.join(map(str, item['cells']))}); "
            f"predicted steps(bs {bs1}) / steps(bs {bs2}) = {pred} (at most {item['groups'][1] / item['groups'][0]:g}), "
            f"measured {meas}: {verdict}.")
    if lines:
        lines.append(f"  Rule: {NOISE_RULE}.")
    return lines + [""] if lines else []
