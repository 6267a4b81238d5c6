"""Recommendations and plots, from the tables' CSV files only.

Reads what aggregation wrote; never imports the trainer. Which rule picks each
recommendation lives in ``lorasweep.analysis.recommend``; here they are only assembled.
The report's first page (``front.html``) is assembled here too: the verdicts, the
speedup tables with their intervals, and the steps-vs-batch plot.
"""

import base64
import html
import json
import math
import re
from pathlib import Path

import pandas as pd

from .. import atomic
from . import plots, recommend, sequential, tables


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
    study = json.loads(Path(args.study_config).read_text(encoding="utf-8")) if args.study_config else None
    state = sequential.read_state(getattr(args, "sequential", None))
    if lr is not None and state is not None and study is not None:  # a sequential study: each claim at its look
        verdicts = sequential.final_verdicts(lr.to_dict("records"), study["lr_scaling"], state)
        verdicts_rule = sequential.sequential_rule(study["lr_scaling"])
    else:
        verdicts = recommend.recommend_verdicts(lr) if lr is not None else None
        verdicts_rule = None
    noise = recommend.recommend_noise(lr) if lr is not None else None
    conc_recs = None
    if conc is not None:
        series = [key for key in ("rank", "batch_size", "lr", "packing") if key in conc.columns]
        conc_recs = [recommend.recommend_concurrency(group) for _, group in conc.groupby(series)]
    text = f"{note}\n\n" + recommend.render_markdown(conc_recs, default_rec, verdicts, noise, verdicts_rule)
    written.append(atomic.write_text(args.out, text))

    if lr is not None:
        written.append(plots.plot_steps_vs_batch(lr, plots_dir / "steps_vs_batch.png", note=note))
        written.append(plots.plot_wall_per_cell(lr, plots_dir / "wall_per_cell.png", note=note))
        noise_table = _read(getattr(args, "noise_table", None))
        written.append(plots.plot_noise_scale(noise_table, plots_dir / "noise_scale.png", note=note))
    if conc is not None:
        written.append(plots.plot_concurrency(conc, plots_dir / "concurrency.png", note=note))
    if getattr(args, "front", None):
        page = front_page(lr, verdicts, default_rec, study, note, plots_dir / "steps_vs_batch.png", noise, verdicts_rule)
        written.append(atomic.write_text(args.front, page))
    for path in written:
        print(f"wrote {path}")
    return 0


# The report shows its description in a narrow column (a Tailwind max-w-lg) inside a
# container that centres its content vertically, so a page taller than the window would
# lose its top, out of reach of the scroll bar. This style lives only while the page is
# shown: it widens the column and starts the content at the top. If a later Snakemake
# names its classes differently, the page only stays narrow (or centred).
WIDEN = ("<style>.prose.max-w-lg { max-width: 70rem; } "
         ".h-screen.overflow-auto.items-center { align-items: flex-start; } "
         ".lorasweep-answer table { font-size: 0.8rem; }</style>")


def front_page(lr, verdicts, default_rec, study, note: str, plot_path: Path, noise=None,
               sequential_rule: str = None) -> str:
    """The report's first page as an HTML fragment: verdicts, speedup tables, the steps-vs-batch plot."""
    parts = [WIDEN, '<div class="lorasweep-answer">', "<h2>The answer</h2>", f"<p>{html.escape(note)}</p>"]
    if lr is None:
        parts.append("<p>No lr-scaling cells in this study.</p>")
        return "\n".join(parts + ["</div>"]) + "\n"
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in lr.to_dict("records")]
    training = (study or {}).get("training", {})
    max_steps = int(training.get("max_steps") or max(r["horizon"] for r in rows))
    target = training.get("target")
    if verdicts:
        parts.append("<h3>Verdicts</h3>")
        lines = recommend._verdict_lines(verdicts)
        if sequential_rule:
            lines.insert(len(lines) - 1, f"  Sequential: {sequential_rule}.")
        parts.append(_html_list(lines))
    if noise:
        parts.append("<h3>The gradient noise scale's prediction</h3>")
        parts.append(_html_list(recommend._noise_lines(noise)))
    if default_rec:
        parts.append("<h3>Speedup from linear lr scaling</h3>")
        parts.append(_html_list(recommend._default_lines(default_rec)))
    for rank in sorted({r["rank"] for r in rows}):
        rank_rows = [r for r in rows if r["rank"] == rank]
        title = f"rank {rank}" + (f": wall-clock to reward {target:g}" if target is not None else "")
        parts.append(f"<h3>{html.escape(title)}</h3>")
        parts.append(tables.headline_table(rank_rows, target if target is not None else float("nan"), max_steps))
    censored = any(r["censored"] and r["avg_steps"] is not None for r in rows)
    footnote = " * some seeds did not reach the target: the average and the wall are lower bounds." if censored else ""
    parts.append(f"<p><small>{html.escape(tables.estimates_note(rows, max_steps) + footnote)}</small></p>")
    if plot_path.exists():
        data = base64.b64encode(plot_path.read_bytes()).decode("ascii")
        parts.append(f'<img alt="steps to target vs batch size" style="max-width: 100%" '
                     f'src="data:image/png;base64,{data}">')
    parts.append("<p>The full tables, every recommendation with its rule, and the other plots are in the "
                 "categories of this report.</p>")
    return "\n".join(parts + ["</div>"]) + "\n"


def _html_list(markdown_lines: list) -> str:
    """Markdown bullet lines ('- **x**: y', continued by '  Rule: ...') as an HTML list."""
    items = []
    for line in markdown_lines:
        if not line.strip():
            continue
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(line.strip()))
        if line.startswith("- "):
            items.append(text[2:])
        elif items:
            items[-1] += f"<br><small>{text}</small>"
        else:
            items.append(text)
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"
