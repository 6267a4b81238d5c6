"""Numbers as people read them: one lr form everywhere, while cell ids keep theirs."""

import math

import pandas as pd
import pytest
import yaml

from lorasweep import formatting

from lorasweep.study import grid

from lorasweep.analysis import plots, tables
from lorasweep.study.config import deep_merge, resolve
from lorasweep.errors import LorasweepError
from workflow import ROOT


@pytest.mark.parametrize(
    "value, text",
    [
        (3e-4, "3e-4"), (6e-4, "6e-4"), (1.2e-3, "1.2e-3"), (0.01, "1e-2"), (0.1, "1e-1"), (1.0, "1e0"),
        (1.25e-3, "1.25e-3"), (2.5e-10, "2.5e-10"), (1.2345e-3, "1.234e-3"), ("5e-4", "5e-4"),
        # 3 * 4e-4: a scaled lr that is not exactly 1.2e-3 in binary still reads as the study wrote it
        (3 * 4e-4, "1.2e-3"),
    ],
)
def test_lr_is_written_the_studys_way(value, text):
    assert formatting.lr(value) == text


def test_the_cell_id_keeps_its_own_lr_form():
    # a path, not a display: folders of finished studies are named this way
    assert grid.format_lr(1.2e-3) == "1.2e-03"
    cell = grid.Cell(experiment=grid.LR_SCALING, rank=4, batch_size=8, lr=1e-3, n=2)
    assert cell.cell_id == "r4_bs8_lr1e-03_n2"


def test_number_drops_padding():
    assert [formatting.number(x) for x in (0.9, 0.75, 1.0, 1)] == ["0.9", "0.75", "1", "1"]


@pytest.mark.parametrize("value, finite", [
    (1, True), (2.5, True), (0, True), (None, False), (True, False), (math.nan, False), (math.inf, False),
    ("1", False), (pd.Series([1.5]).iloc[0], True), (pd.Series([None], dtype=float).iloc[0], False),
])
def test_is_finite(value, finite):
    assert formatting.is_finite(value) is finite


def test_records_from_a_dataframe_or_dicts_are_fresh_dicts():
    rows = [{"n": 1, "lr": 3e-4}, {"n": 2, "lr": 6e-4}]
    assert formatting.records(pd.DataFrame(rows)) == rows
    copied = formatting.records(rows)
    copied[0]["n"] = 9
    assert rows[0]["n"] == 1


def test_tables_plots_and_config_messages_print_the_lr_alike():
    row = {"rank": 4, "batch_size": 32, "lr": 1.2e-3, "is_control": False, "avg_steps": 110.0, "min_steps": 100,
           "max_steps": 120, "censored": 0, "n": 2, "step_time": 0.79, "wall": 86.9, "speedup": 2.7,
           "steps_lo": 100, "steps_hi": 120, "wall_lo": 79.0, "wall_hi": 94.8, "speedup_lo": None, "speedup_hi": None,
           "interval_note": None, "degenerate": 0, "judged": 2}
    degeneracy = {"samples": 20, "max_distinct_flag": 7, "min_jaccard_flag": 0.18}
    table = tables.lr_scaling_markdown([row], target=0.9, max_steps=300, degeneracy_settings=degeneracy)
    assert "| 1.2e-3 " in table and "e-03" not in table
    assert "avg steps to 0.9" in table
    assert plots._series_label((("rank", 32), ("batch_size", 128), ("lr", 1.2e-3))) == "rank 32, bs 128, lr 1.2e-3"
    overrides = {"concurrency": {"settings": [{"batch_size": 16, "lr": 1.2e-3, "levels": [1, 2]},
                                              {"batch_size": 16, "lr": 1.2e-3, "levels": [2]}]}}
    config = deep_merge(yaml.safe_load((ROOT / "config.yaml").read_text()), overrides)
    with pytest.raises(LorasweepError, match=r"for batch_size 16, lr 1\.2e-3 \(level 2"):
        resolve(config, overrides, gpus=[])

