"""Recommendations and plots, from the tables' CSV files only.

Reads what aggregation wrote; never imports the trainer. Which rule picks each
recommendation lives in ``lorasweep.recommend``; here they are only assembled.
"""

import json
from pathlib import Path

import pandas as pd

from . import atomic, plots, recommend


def _read(path):
    return pd.read_csv(path) if path and Path(path).exists() else None


def main(args) -> int:
    base_info = json.loads(Path(args.base_info).read_text(encoding="utf-8"))
    note = f"base: {base_info['model_label']}"
    lr = _read(args.lr_table)
    conc = _read(args.concurrency_table)
    plots_dir = Path(args.plots_dir)
    written = []

    default_rec = recommend.recommend_default(lr) if lr is not None else None
    verdicts = recommend.recommend_verdicts(lr) if lr is not None else None
    conc_recs = None
    if conc is not None:
        conc_recs = [recommend.recommend_concurrency(group) for _, group in conc.groupby(["rank", "batch_size", "lr"])]
    text = f"{note}\n\n" + recommend.render_markdown(conc_recs, default_rec, verdicts)
    written.append(atomic.write_text(args.out, text))

    if lr is not None:
        written.append(plots.plot_steps_vs_batch(lr, plots_dir / "steps_vs_batch.png", note=note))
        written.append(plots.plot_wall_per_cell(lr, plots_dir / "wall_per_cell.png", note=note))
    if conc is not None:
        written.append(plots.plot_concurrency(conc, plots_dir / "concurrency.png", note=note))
    for path in written:
        print(f"wrote {path}")
    return 0
