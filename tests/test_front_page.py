"""The report's first page: verdicts, the speedup tables with intervals, the plot, from the CSV alone."""

import re

import pandas as pd

from lorasweep.analysis import plots, recommend, report
from test_estimates import table_rows


def test_front_page_opens_on_verdicts_tables_and_plot(tmp_path):
    lr = pd.DataFrame(table_rows())  # as the recommendations stage reads lr_scaling.csv
    lr.to_csv(tmp_path / "lr.csv", index=False)
    lr = pd.read_csv(tmp_path / "lr.csv")
    plot = plots.plot_steps_vs_batch(lr, tmp_path / "steps_vs_batch.png")
    page = report.front_page(lr, recommend.recommend_verdicts(lr), recommend.recommend_default(lr),
                             {"training": {"target": 0.75, "max_steps": 300}}, "base: test", plot)
    page = re.sub(r"\s+</t([dh])>", r"</t\1>", page)  # tabulate pads the cells
    assert page.index("<h2>The answer</h2>") < page.index("<h3>Verdicts</h3>") < page.index("<h3>rank 32")
    # rank 32: bs 32 (80, 90, 85, 85) against bs 8 (250, 290, 260, 280): every seed apart, p = 2 / 70
    assert "<strong>Verdict, rank 32</strong>: bs 32 with scaled lr 2e-3 needs fewer steps than bs 8" in page
    assert "resolved, it holds (exact permutation test, 4 seeds per cell, p = 0.0286) — 270 vs 85 steps" in page
    assert "<td>270 [241, 299]</td>" in page and "<td>27s [24s, 30s]</td>" in page
    assert "<td>1.3x [1.14x, 1.41x]</td>" in page
    assert "<td>188 (1 of 4 not reached) [67, 300]</td>" in page
    assert "not reached (&gt; 300)" in page  # the all-censored control
    assert "lower bounds" in page and "Student-t over its seeds" in page
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page  # the PNG itself, embedded
    assert page.startswith(report.WIDEN)
