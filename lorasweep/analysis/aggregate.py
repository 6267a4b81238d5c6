"""Aggregation: reads the recorded cells, writes the tables (markdown and CSV).

Reads files only; never imports the trainer. Every number comes from the per-step
records through ``metrics``; ``summary.json`` is used only for which cell it is.
"""

import json
from pathlib import Path

from .. import atomic, formatting
from ..training import degeneracy
from . import metrics, noise_scale, tables
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


def write_lr_scaling(config: dict, base_info: dict, cell_dirs: list, out_dir: Path, base_samples: dict = None) -> list:
    """The lr-scaling tables and the samples page; ``base_samples`` (the untrained base's
    held-out samples, ``lorasweep.training.base_samples``) is the degeneracy reference, when given."""
    t = config["training"]
    loaded = [(*load_cell(d, t), load_samples(d), d) for d in cell_dirs]
    loaded = [entry for entry in loaded if entry[0]["cell"]["experiment"] == LR_SCALING]
    lr_dirs = [entry[3] for entry in loaded]
    loaded = [entry[:3] for entry in loaded]
    if not loaded:
        return []
    rows = tables.lr_scaling_rows([(s["cell"], o, tables.degenerate_flags(samples, t["degeneracy"]))
                                   for s, o, samples in loaded], config["lr_scaling"]["base_batch_size"],
                                  t["max_steps"], t.get("early_steps"), t["generations_per_prompt"])
    header = header_line(config, base_info, [s for s, _, _ in loaded])
    written, sections = [], [f"# LR scaling: wall-clock to reward {formatting.number(t['target'])}\n", header + "\n"]
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
        noise_series_rows([(s["cell"], d) for (s, _, _), d in zip(loaded, lr_dirs)]),
        columns=NOISE_COLUMNS)))
    written.append(atomic.write_text(out_dir / "samples.md", (
        f"# Held-out samples: has a run collapsed?\n\n{header}\n\n{degeneracy.rule_text(t['degeneracy'])}. "
        f"Two of each seed's samples below, one per line: prompt | completion.\n\n{samples}")))
    return written


NOISE_COLUMNS = ["rank", "batch_size", "lr", "is_control", "seed", "step", "b_simple"]


def noise_series_rows(cells: list) -> list:
    """Each seed's gradient noise scale after every step (``noise_scale.noise_scale_series``), for the plot."""
    rows = []
    for cell, cell_dir in cells:
        for path in sorted((Path(cell_dir) / "steps").glob("seed*.jsonl")):
            series = noise_scale.noise_scale_series(atomic.read_jsonl(path))
            seed = int(path.stem.removeprefix("seed"))
            rows += [{"rank": cell["rank"], "batch_size": cell["batch_size"], "lr": cell["lr"],
                      "is_control": bool(cell["control"]), "seed": seed, "step": step, "b_simple": value}
                     for step, value in enumerate(series, start=1) if value is not None]
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


def main(args) -> int:
    config = json.loads(Path(args.config).read_text(encoding="utf-8"))
    base_info = json.loads(Path(args.base_info).read_text(encoding="utf-8"))
    out_dir = Path(args.out_dir)
    if args.experiment == LR_SCALING:
        base_samples = json.loads(Path(args.base_samples).read_text(encoding="utf-8")) if args.base_samples else None
        written = write_lr_scaling(config, base_info, args.cells, out_dir, base_samples)
    else:
        written = write_concurrency(config, base_info, args.cells, out_dir)
    for path in written:
        print(f"wrote {path}")
    return 0
