"""Each plot writes a real PNG from a small synthetic table (DataFrame or list of dicts)."""

import math

import pandas as pd
import pytest

from lorasweep.errors import LorasweepError
from lorasweep.analysis.plots import plot_concurrency, plot_steps_vs_batch, plot_wall_per_cell
from lorasweep.analysis.throughput import throughput_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def lr_frame() -> pd.DataFrame:
    rows = []
    for rank, base_steps in ((4, 313), (32, 167)):
        for bs, lr, factor in ((32, 3e-4, 1.0), (64, 6e-4, 0.55), (128, 1.2e-3, 0.35)):
            steps = base_steps * factor
            rows.append(dict(rank=rank, batch_size=bs, lr=lr, avg_steps=steps, min_steps=steps * 0.8,
                             max_steps=steps * 1.3, step_time=0.75, wall=steps * 0.75, censored=0, is_control=False))
    # A control with a censored seed, and a cell where every seed was censored.
    rows.append(dict(rank=4, batch_size=128, lr=3e-4, avg_steps=390, min_steps=300, max_steps=400, step_time=0.79,
                     wall=390 * 0.79, censored=1, is_control=True))
    rows.append(dict(rank=32, batch_size=256, lr=2.4e-3, avg_steps=math.nan, min_steps=math.nan, max_steps=math.nan,
                     step_time=0.8, wall=math.nan, censored=3, is_control=False))
    return pd.DataFrame(rows)


def concurrency_frame() -> pd.DataFrame:
    rows = throughput_rows([{"n": n, "step_time": t, "batch_size": 128, "rank": 32} for n, t in
                            {3: 0.80, 6: 0.90, 12: 1.15, 18: 1.76}.items()])
    rows += throughput_rows([{"n": n, "step_time": t, "batch_size": 32, "rank": 32} for n, t in
                             {12: 1.12, 16: 1.06, 20: 1.32}.items()])
    return pd.DataFrame(rows)


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 10_000  # axes, labels and data, not an empty canvas
    # No temp file left next to it: the write was atomic.
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_steps_vs_batch(tmp_path):
    path = plot_steps_vs_batch(lr_frame(), tmp_path / "plots" / "steps_vs_batch.png", note="CPU; embedded base")
    assert_png(path)


def test_wall_per_cell(tmp_path):
    path = plot_wall_per_cell(lr_frame(), tmp_path / "wall_per_cell.png")
    assert_png(path)


def test_concurrency_with_two_series(tmp_path):
    path = plot_concurrency(concurrency_frame(), tmp_path / "concurrency.png", note="NVIDIA H200, MPS on")
    assert_png(path)


def test_plots_accept_lists_of_dicts(tmp_path):
    records = lr_frame().to_dict("records")
    assert_png(plot_wall_per_cell(records, tmp_path / "a.png"))
    single = throughput_rows([{"n": 1, "step_time": 1.0, "batch_size": 8}])
    assert_png(plot_concurrency(single, tmp_path / "b.png"))


def test_plot_names_what_is_missing(tmp_path):
    with pytest.raises(LorasweepError, match="no column.*efficiency"):
        plot_concurrency([{"n": 1, "step_time": 1.0, "agg_steps_per_s": 1.0, "samples_per_s": 8.0}], tmp_path / "c.png")
    with pytest.raises(LorasweepError, match="empty"):
        plot_wall_per_cell(pd.DataFrame(), tmp_path / "d.png")
    assert not (tmp_path / "c.png").exists()


def censored_at_the_same_batch_size():
    """Both ranks with censored seeds at bs 8 (where two labels beside the points used to overprint)."""
    rows = []
    for rank, steps in ((4, (274, 200, 120)), (32, (260, 163, 80))):
        for (bs, lr), avg in zip(((8, 1e-3), (16, 2e-3), (32, 4e-3)), steps):
            rows.append(dict(rank=rank, batch_size=bs, lr=lr, avg_steps=avg, min_steps=avg - 30, max_steps=avg,
                             steps_lo=avg - 40, steps_hi=min(300, avg + 26), censored=1 if bs == 8 else 0, n=2,
                             step_time=0.1 * bs / 8, wall=avg * 0.1 * bs / 8, wall_lo=(avg - 40) * 0.1 * bs / 8,
                             wall_hi=min(300, avg + 26) * 0.1 * bs / 8, is_control=False))
    return rows


def test_steps_vs_batch_labels_stay_inside_the_figure_and_apart():
    from lorasweep.analysis.plots import steps_vs_batch_figure

    fig = steps_vs_batch_figure(censored_at_the_same_batch_size(), note="CPU; embedded base")
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = fig.legends[0]
    texts = [t for t in ax.texts + legend.get_texts() + [fig._suptitle, ax.yaxis.label] if t.get_text()]
    figure_box = fig.bbox
    for text in texts:
        box = text.get_window_extent(renderer)
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, f"{text.get_text()!r} runs off the figure"
    # the censored cells are named once, in the legend, not in labels beside the points
    assert [t.get_text() for t in ax.texts] == []
    assert any("censored seeds, a lower bound: rank 4 bs 8 (1 of 2), rank 32 bs 8 (1 of 2)" in t.get_text()
               for t in legend.get_texts())
    # the error bars are the 95% intervals: rank 32, bs 32 spans 40 to 106
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    assert any(abs(seg[0][0] / 32 - 1) < 0.05 and sorted([seg[0][1], seg[1][1]]) == [40, 106] for seg in segments)
    assert "95% Student-t interval" in ax.get_ylabel()


def test_wall_per_cell_draws_the_wall_intervals(tmp_path):
    assert_png(plot_wall_per_cell(censored_at_the_same_batch_size(), tmp_path / "wall.png"))
