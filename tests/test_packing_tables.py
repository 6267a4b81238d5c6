"""The concurrency table and plot with both packings: processes and fused, the same definitions."""

from lorasweep.analysis import tables
from lorasweep.analysis.plots import _series_label, plot_concurrency
from lorasweep.analysis.throughput import throughput_rows


def both_series():
    rows = []
    for packing, times in (("processes", {1: 0.5, 2: 0.8}), ("fused", {1: 0.4, 2: 0.5, 4: 0.8})):
        rows += throughput_rows([{"rank": 4, "batch_size": 8, "lr": 1e-3, "packing": packing, "n": n,
                                  "step_time": t, "mps": "off"} for n, t in times.items()])
    return rows


def test_the_side_by_side_table_divides_fused_by_processes_level_by_level():
    md = tables.packing_comparison_markdown(both_series())
    lines = md.splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:-1]] == ["series", "runs", "processes (steps/s)",
                                                                   "fused (steps/s)", "fused / processes"]
    # n 1: 1 / 0.5 = 2.00 against 1 / 0.4 = 2.50 -> 1.25x; n 2: 2 / 0.8 = 2.50 against 2 / 0.5 = 4.00 -> 1.60x
    assert [cell.strip() for cell in lines[2].split("|")[1:-1]] == ["r4 bs 8 lr 1e-3", "1", "2.00", "2.50", "1.25x"]
    assert [cell.strip() for cell in lines[3].split("|")[1:-1]] == ["r4 bs 8 lr 1e-3", "2", "2.50", "4.00", "1.60x"]
    # a level measured one way only: a dash where the other would be
    assert [cell.strip() for cell in lines[4].split("|")[1:-1]] == ["r4 bs 8 lr 1e-3", "4", "—", "5.00", "—"]


def test_one_packing_alone_has_no_side_by_side_table():
    assert tables.packing_comparison_markdown([r for r in both_series() if r["packing"] == "fused"]) == ""


def test_the_plot_draws_both_series_and_labels_fused_without_mps(tmp_path):
    assert plot_concurrency(both_series(), tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert _series_label((("rank", 4), ("packing", "fused"), ("mps", "off"))) == "rank 4, fused"
    assert _series_label((("rank", 4), ("packing", "processes"), ("mps", "off"))) == "rank 4, processes, MPS off"


def test_the_concurrency_table_whole():
    # n / step_time: 1 / 0.5 = 2.00, 2 / 0.8 = 2.50, 4 / 1.25 = 3.20 steps/s; samples/s x 8: 16, 20, 25.6 -> 26;
    # efficiency (agg / n) / 2: 1.00, 0.625 -> 0.62 (half to even), 0.40
    levels = [{"n": n, "step_time": t, "batch_size": 8} for n, t in ((4, 1.25), (1, 0.5), (2, 0.8))]
    assert tables.concurrency_markdown(throughput_rows(levels)) == """\
| concurrent   | step_time   | agg. throughput   | samples/s   | efficiency   |
|--------------|-------------|-------------------|-------------|--------------|
| 1            | 0.50s       | 2.00 steps/s      | 16          | 1.00         |
| 2            | 0.80s       | 2.50 steps/s      | 20          | 0.62         |
| 4            | 1.25s       | 3.20 steps/s      | 26          | 0.40         |"""


def test_rows_without_a_packing_are_processes_and_every_series_measured_both_ways_is_shown():
    # series lr 1e-3 measured one way only (sorts first), series lr 2e-3 both ways; the process rows
    # carry no packing key (made before fused runs existed). n 2 of lr 2e-3 ran as processes only.
    only = throughput_rows([{"rank": 4, "batch_size": 8, "lr": 1e-3, "n": 1, "step_time": 0.5}])
    processes = throughput_rows([{"rank": 4, "batch_size": 8, "lr": 2e-3, "n": n, "step_time": t}
                                 for n, t in ((1, 0.5), (2, 0.8))])
    fused = throughput_rows([{"rank": 4, "batch_size": 8, "lr": 2e-3, "packing": "fused", "n": 1, "step_time": 0.25}])
    lines = tables.packing_comparison_markdown(only + processes + fused).splitlines()
    # n 1: 1 / 0.5 = 2.00 against 1 / 0.25 = 4.00 -> 2.00x; n 2: 2 / 0.8 = 2.50, no fused run
    assert [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]] == [
        ["r4 bs 8 lr 2e-3", "1", "2.00", "4.00", "2.00x"],
        ["r4 bs 8 lr 2e-3", "2", "2.50", "—", "—"],
    ]
