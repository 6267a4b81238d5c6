import dataclasses

import pytest

from lorasweep.study import grid
from lorasweep.study.cellspec import CellSpec


def lr_cfg(**kw):
    cfg = {"enabled": True, "ranks": [4, 32], "batch_sizes": [32, 64, 128], "base_batch_size": 32,
           "base_lr": 3e-4, "scaling": "linear", "controls": [{"batch_size": 128, "lr": 3e-4}], "n": 3}
    cfg.update(kw)
    return cfg


def test_linear_scaling_reproduces_the_study_lrs():
    assert [grid.scaled_lr(3e-4, 32, bs, "linear") for bs in (32, 64, 128)] == pytest.approx([3e-4, 6e-4, 1.2e-3])


def test_sqrt_scaling():
    assert grid.scaled_lr(3e-4, 32, 128, "sqrt") == pytest.approx(6e-4)
    with pytest.raises(ValueError):
        grid.scaled_lr(3e-4, 32, 128, "cubic")


def test_study_grid_has_three_scaled_cells_and_one_control_per_rank():
    cells = grid.lr_scaling_cells(lr_cfg())
    assert [c.cell_id for c in cells] == [
        "r4_bs32_lr3e-04_n3", "r4_bs64_lr6e-04_n3", "r4_bs128_lr1.2e-03_n3", "r4_bs128_lr3e-04_n3",
        "r32_bs32_lr3e-04_n3", "r32_bs64_lr6e-04_n3", "r32_bs128_lr1.2e-03_n3", "r32_bs128_lr3e-04_n3",
    ]
    assert [c.control for c in cells] == [False, False, False, True] * 2


def test_a_control_equal_to_a_scaled_cell_is_not_duplicated():
    cells = grid.lr_scaling_cells(lr_cfg(controls=[{"batch_size": 32, "lr": 3e-4}]))
    assert len(cells) == 6


def test_per_rank_base_lr():
    cells = grid.lr_scaling_cells(lr_cfg(base_lr={4: 2e-3, 32: 1e-3}, batch_sizes=[32, 64], controls=[]))
    assert [(c.rank, c.lr) for c in cells] == [(4, 2e-3), (4, 4e-3), (32, 1e-3), (32, 2e-3)]


def test_concurrency_cells_and_disabled_experiments():
    cfg = {"enabled": True, "rank": 32, "steps": 10, "settings": [{"batch_size": 128, "lr": 1.2e-3, "levels": [3, 6]}]}
    assert [c.path for c in grid.concurrency_cells(cfg)] == ["concurrency/r32_bs128_lr1.2e-03_n3", "concurrency/r32_bs128_lr1.2e-03_n6"]
    assert grid.concurrency_cells({**cfg, "enabled": False}) == []
    assert grid.lr_scaling_cells(lr_cfg(enabled=False)) == []


def test_seeds_are_consecutive():
    assert grid.seeds(5, 3) == [5, 6, 7]


def test_planning_imports_no_torch():
    import subprocess
    import sys

    code = "import sys; import lorasweep.study.grid, lorasweep.study.cellspec, lorasweep.study.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=grid.__file__.rsplit("/lorasweep/", 1)[0])
    assert out.stdout.strip() == "False", out.stderr


def test_fused_packing_gets_its_own_cell_ids_and_enters_the_cell_spec():
    cells = grid.lr_scaling_cells(lr_cfg(ranks=[4], batch_sizes=[32], controls=[], packing="fused"))
    assert [c.cell_id for c in cells] == ["r4_bs32_lr3e-04_n3_fused"]
    assert [c.cell_id for c in grid.lr_scaling_cells(lr_cfg(ranks=[4], batch_sizes=[32], controls=[]))] == \
        ["r4_bs32_lr3e-04_n3"]  # processes is the default, and keeps today's ids
    study = {"training": {"max_steps": 5, "target": 0.9, "window": 2}, "resolved": {"device": "cuda"}, "mps": "auto"}
    fused = CellSpec.for_cell(study, cells[0], "b", "p")
    processes = CellSpec.for_cell(study, dataclasses.replace(cells[0], packing="processes"), "b", "p")
    assert fused.to_dict()["cell"]["packing"] == "fused" and processes.to_dict()["cell"]["packing"] == "processes"
    assert fused.mps is None and processes.mps == "auto"  # one fused process has no MPS to share through


def test_concurrency_series_for_processes_and_fused():
    cfg = {"enabled": True, "rank": 32, "steps": 10, "packing": ["processes", "fused"],
           "settings": [{"batch_size": 128, "lr": 1.2e-3, "levels": [3, 6]}]}
    assert [c.cell_id for c in grid.concurrency_cells(cfg)] == [
        "r32_bs128_lr1.2e-03_n3", "r32_bs128_lr1.2e-03_n6", "r32_bs128_lr1.2e-03_n3_fused", "r32_bs128_lr1.2e-03_n6_fused"]
    cfg["fused_levels"] = [1, 16, 64]
    assert [c.cell_id for c in grid.concurrency_cells(cfg) if c.packing == "fused"] == [
        "r32_bs128_lr1.2e-03_n1_fused", "r32_bs128_lr1.2e-03_n16_fused", "r32_bs128_lr1.2e-03_n64_fused"]
    cfg["packing"] = ["fused"]
    assert {c.packing for c in grid.concurrency_cells(cfg)} == {"fused"}


def test_the_cell_rule_accepts_fused_cell_ids():
    import re
    from pathlib import Path

    rule = (Path(grid.__file__).resolve().parents[2] / "rules/cells.smk").read_text()
    pattern = re.search(r'cell=r"([^"]+)"', rule).group(1)
    assert re.fullmatch(pattern, "r32_bs128_lr1.2e-03_n64_fused")
    assert re.fullmatch(pattern, "r32_bs128_lr1.2e-03_n64")
    assert not re.fullmatch(pattern, "r32_bs128_lr1.2e-03_n64_fusedx")
