"""Aggregation: reads the recorded cells, writes the tables (markdown and CSV).

Reads files only; never imports the trainer. Every number comes from the per-step
records through ``metrics``; ``summary.json`` is used only for which cell it is.
"""

import json
from pathlib import Path

from .. import atomic, formatting
from ..training import degeneracy
from . import metrics, noise_scale, sequential, tables
from ..study import grid
from ..study.grid import CONCURRENCY, FUSED, LR_SCALING, PROCESSES
from .throughput import throughput_rows


def load_cell(cell_dir, training: dict):
    """(cell dict, CellOutcome) of one cell folder, recomputed from its per-step records."""
    cell_dir = Path(cell_dir)
    summary = json.loads((cell_dir / "summary.json").read_text(encoding="utf-8"))
    records = {
        int(path.stem.removeprefix("seed")): atomic.read_jsonl(path)
        for path in sorted((cell_dir / "steps").glob("seed*.jsonl"))
    }
    outcome = metrics.cell_outcome(records, training["target"], training["window"], training["warmup_steps"],
                                   training.get("early_steps"))
    return summary, outcome


def load_samples(cell_dir) -> dict:
    """seed -> the held-out samples its worker recorded (``samples_seed<k>.json``); {} for cells without."""
    return {
        int(path.stem.removeprefix("samples_seed")): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((Path(cell_dir) / "steps").glob("samples_seed*.json"))
    }


def load_experiment(cell_dirs, training: dict, experiment: str) -> list:
    """(summary, CellOutcome) of the given cell folders that belong to ``experiment``."""
    loaded = [load_cell(d, training) for d in cell_dirs]
    return [(s, o) for s, o in loaded if s["cell"]["experiment"] == experiment]


def header_line(config: dict, base_info: dict, summaries: list) -> str:
    """The essentials above every table: base model, prompts, device, scale, target."""
    resolved = config["resolved"]
    t = config["training"]
    names = sorted({s["device_name"] for s in summaries if s.get("device_name")})
    if names:
        device = " / ".join(names)
    else:  # cells from before device names were recorded
        device = "CUDA GPU" if resolved["device"] == "cuda" else f"CPU ({base_info.get('cpu', 'cpu')})"
    threads = sorted({s.get("threads_per_worker") for s in summaries if s.get("device") == "cpu"})
    threads_text = f", {'/'.join(map(str, threads))} thread(s) per worker" if threads else ""
    return (
        f"Base: {base_info['model_label']} · prompts: {base_info['prompt_source']} · "
        f"device: {device}{threads_text} · scale: {resolved['scale']} · "
        f"target {formatting.number(t['target'])} over a trailing window of {t['window']} steps, max {t['max_steps']} steps · "
        f"G={t['generations_per_prompt']}, {t['max_new_tokens']} new tokens · reward {t['reward']}"
        f" · engine: {base_info.get('engine', 'fast')}"
    )


def merge_outcomes(outcomes: list) -> metrics.CellOutcome:
    """One cell's outcome from its blocks' (a sequential cell, first block first): their seeds together, and the
    step time of the first block's workers.

    Every cell's first block has the same seeds and packing, so its step time is
    measured under the same sharing of the device in every cell; a later block is
    smaller (3 seeds on 2 cores step about a third faster than 6) and only some cells
    get one, so mixing its times in would make the cells with more blocks look faster.
    """
    workers = sorted((w for o in outcomes for w in o.workers), key=lambda w: w.seed)
    return metrics.CellOutcome(workers=workers, worker_step_times=dict(sorted(outcomes[0].worker_step_times.items())))


def load_lr_cells(config: dict, cell_dirs: list) -> list:
    """(summary, CellOutcome, samples by seed, folders) per lr-scaling cell, a sequential cell's blocks merged.

    The blocks of one cell (``grid.Cell.key``) are read each on its own, so that
    each worker's step time is taken inside its own block's steady window, then
    joined: the cell's seeds are all its blocks' seeds, its step time the median of
    its first block's workers' medians (``merge_outcomes``; docs/numbers.md,
    definition 3).
    """
    t = config["training"]
    groups = {}
    for d in cell_dirs:
        summary, outcome = load_cell(d, t)
        cell = summary["cell"]
        if cell["experiment"] != LR_SCALING:
            continue
        key = (cell["rank"], cell["batch_size"], cell["lr"], bool(cell["control"]), cell.get("packing", PROCESSES))
        groups.setdefault(key, []).append((cell.get("block") or 0, summary, outcome, load_samples(d), d))
    merged = []
    for key, blocks in groups.items():
        blocks.sort(key=lambda block: block[0])
        summary = dict(blocks[0][1])
        outcome = merge_outcomes([block[2] for block in blocks])
        summary["cell"] = {**{k: v for k, v in summary["cell"].items() if k not in ("block", "cell_id")},
                           "n": len(outcome.workers)}
        samples = {seed: record for block in blocks for seed, record in block[3].items()}
        merged.append((summary, outcome, samples, [block[4] for block in blocks]))
    return merged


def lr_scaling_rows_of(config: dict, cell_dirs: list, loaded: list = None) -> list:
    """The lr-scaling table's rows of the cells in ``cell_dirs`` (``tables.lr_scaling_rows``)."""
    t = config["training"]
    loaded = load_lr_cells(config, cell_dirs) if loaded is None else loaded
    return tables.lr_scaling_rows([(s["cell"], o, tables.degenerate_flags(samples, t["degeneracy"]))
                                   for s, o, samples, _ in loaded], config["lr_scaling"]["base_batch_size"],
                                  t["max_steps"], t.get("early_steps"), t["generations_per_prompt"])


def write_lr_scaling(config: dict, base_info: dict, cell_dirs: list, out_dir: Path, base_samples: dict = None,
                     sequential_state: dict = None) -> list:
    """The lr-scaling tables and the samples page; ``base_samples`` (the untrained base's
    held-out samples, ``lorasweep.training.base_samples``) is the degeneracy reference, when given.
    A sequential study also writes its last look (``sequential.json``): the verdicts the
    recommendations report and each cell's reason for its seeds."""
    t = config["training"]
    loaded4 = load_lr_cells(config, cell_dirs)
    if not loaded4:
        return []
    lr_dirs = [entry[3] for entry in loaded4]
    rows = lr_scaling_rows_of(config, cell_dirs, loaded4)
    loaded = [entry[:3] for entry in loaded4]
    written = []
    if grid.is_sequential(config["lr_scaling"]):
        state = sequential.final_state(rows, config["lr_scaling"], sequential_state)
        for row in rows:
            row["seeds_reason"] = state["stopped"].get(sequential.label_of(row))
        written.append(atomic.write_json(out_dir / "sequential.json", state))
    header = header_line(config, base_info, [s for s, _, _ in loaded])
    sections = [f"# LR scaling: wall-clock to reward {formatting.number(t['target'])}\n", header + "\n"]
    for rank in sorted({r["rank"] for r in rows}):
        rank_rows = [r for r in rows if r["rank"] == rank]
        md = tables.lr_scaling_markdown(rank_rows, t["target"], t["max_steps"], t["degeneracy"], base_samples)
        sections.append(f"## rank {rank}\n\n{md}\n")
        written.append(atomic.write_text(out_dir / f"lr_scaling_rank{rank}.md", f"{header}\n\n### rank {rank}\n\n{md}\n"))
        written.append(atomic.write_text(out_dir / f"lr_scaling_rank{rank}.csv", tables.to_csv(rank_rows)))
    written.append(atomic.write_text(out_dir / "lr_scaling.md", "\n".join(sections)))
    written.append(atomic.write_text(out_dir / "lr_scaling.csv", tables.to_csv(rows)))
    samples = tables.samples_markdown([(s["cell"], samples) for s, _, samples in loaded], t["degeneracy"],
                                      base_samples=base_samples)
    written.append(atomic.write_text(out_dir / "noise_scale.csv", tables.to_csv(
        noise_series_rows([(s["cell"], dirs) for (s, _, _), dirs in zip(loaded, lr_dirs)]),
        columns=NOISE_COLUMNS)))
    written.append(atomic.write_text(out_dir / "samples.md", (
        f"# Held-out samples: has a run collapsed?\n\n{header}\n\n{degeneracy.rule_text(t['degeneracy'])}. "
        f"Two of each seed's samples below, one per line: prompt | completion.\n\n{samples}")))
    return written


NOISE_COLUMNS = ["rank", "batch_size", "lr", "is_control", "step", "b_simple", "updates"]


def noise_series_rows(cells: list) -> list:
    """Each cell's gradient noise scale after every step, pooled over its seeds: the ratio of the sums of
    every estimate recorded so far (a seed that stopped keeps its sums), for the plot."""
    rows = []
    for cell, cell_dirs in cells:
        runs = [atomic.read_jsonl(path) for d in cell_dirs for path in sorted((Path(d) / "steps").glob("seed*.jsonl"))]
        longest = max((len(records) for records in runs), default=0)
        g_sum = t_sum = 0.0
        updates = 0
        for step in range(longest):
            for records in runs:
                estimates = noise_scale.step_estimates(records[step]) if step < len(records) else None
                if estimates is not None:
                    g_sum, t_sum, updates = g_sum + estimates[0], t_sum + estimates[1], updates + 1
            value = noise_scale.ratio(g_sum, t_sum)
            if value is not None:
                rows.append({"rank": cell["rank"], "batch_size": cell["batch_size"], "lr": cell["lr"],
                             "is_control": bool(cell["control"]), "step": step + 1, "b_simple": value,
                             "updates": updates})
    return rows


def _mps_state(summaries: list) -> str:
    if all(s.get("device") == "cpu" for s in summaries):
        return "does not apply (CPU)"
    states = sorted({(s.get("mps") or {}).get("state", "off") for s in summaries})
    return "/".join(states)


def write_concurrency(config: dict, base_info: dict, cell_dirs: list, out_dir: Path) -> list:
    """Throughput per concurrency level, one table per (rank, bs, lr, packing) series.

    The packings of one (rank, bs, lr), processes and fused, are measured with the
    same definitions (docs/numbers.md, definition 6: n / step time while all n
    runs step), so a last table puts them side by side level by level.
    """
    t = config["training"]
    loaded = load_experiment(cell_dirs, t, CONCURRENCY)
    if not loaded:
        return []
    header = header_line(config, base_info, [s for s, _ in loaded])
    series = {}  # (rank, bs, lr, packing) -> the summaries and table rows of its levels
    for summary, outcome in loaded:
        cell = summary["cell"]
        packing = cell.get("packing", PROCESSES)  # cells from before packing existed ran as processes
        summaries, levels = series.setdefault((cell["rank"], cell["batch_size"], cell["lr"], packing), ([], []))
        summaries.append(summary)
        levels.append({
            "rank": cell["rank"], "batch_size": cell["batch_size"], "lr": cell["lr"], "packing": packing,
            "n": cell["n"], "step_time": outcome.step_time, "threads_per_worker": summary["threads_per_worker"],
            "mps": (summary.get("mps") or {}).get("state", "off"),
            # the per-worker medians behind step_time (their median), in seed order
            "worker_step_times": " ".join(
                "-" if median is None else f"{median:.6g}" for median in outcome.worker_step_times.values()
            ),
        })
    all_rows, sections = [], [f"# Concurrency: aggregate throughput of n runs sharing the device\n", header + "\n"]
    # processes first, then fused, for each (rank, bs, lr)
    order = sorted(series, key=lambda key: (key[:3], key[3] != PROCESSES))
    for rank, batch_size, lr, packing in order:
        summaries, levels = series[rank, batch_size, lr, packing]
        rows = throughput_rows(levels)
        all_rows += rows
        threads = "/".join(str(r["threads_per_worker"]) for r in rows)
        how = (f"fused: n runs in one process · threads: {threads}" if packing == FUSED else
               f"processes · MPS: {_mps_state(summaries)} · threads per worker: {threads}")
        sections.append(f"## rank {rank}, bs {batch_size}, lr {formatting.lr(lr)} · {how}\n\n"
                        f"{tables.concurrency_markdown(rows)}\n")
    side = tables.packing_comparison_markdown(all_rows)
    if side:
        sections.append(f"## processes and fused side by side\n\n{side}\n")
    sections.append("agg. throughput = n / step_time, with step_time measured while all n runs step at once "
                    "(n processes, or n runs fused in one process); efficiency = throughput per run relative to "
                    "the lowest level of the same series.\n")
    return [
        atomic.write_text(out_dir / "concurrency.md", "\n".join(sections)),
        atomic.write_text(out_dir / "concurrency.csv", tables.to_csv(all_rows)),
    ]


def sequential_round_main(args) -> int:
    """``python -m lorasweep sequential-round``: the decision after a round, from the blocks run so far."""
    config = json.loads(Path(args.config).read_text(encoding="utf-8"))
    rows = lr_scaling_rows_of(config, args.cells)
    state = sequential.decide(rows, config["lr_scaling"], args.round, sequential.read_state(args.previous))
    atomic.write_json(args.out, state)
    print(f"round {args.round}: {len(state['continue'])} cell(s) get another block "
          f"({', '.join(state['continue']) or 'none'}); {len(state['settled'])} claim(s) settled")
    return 0


def main(args) -> int:
    config = json.loads(Path(args.config).read_text(encoding="utf-8"))
    base_info = json.loads(Path(args.base_info).read_text(encoding="utf-8"))
    out_dir = Path(args.out_dir)
    if args.experiment == LR_SCALING:
        base_samples = json.loads(Path(args.base_samples).read_text(encoding="utf-8")) if args.base_samples else None
        state = sequential.read_state(getattr(args, "sequential", None))
        written = write_lr_scaling(config, base_info, args.cells, out_dir, base_samples, state)
    else:
        written = write_concurrency(config, base_info, args.cells, out_dir)
    for path in written:
        print(f"wrote {path}")
    return 0
