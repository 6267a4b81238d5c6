"""The cell spec: built in one place, validated when built, and the same JSON text as before.

The cell job's parameter is the spec's JSON text: if that text changed for an unchanged
study, every finished cell of every study would rerun. The reference below is how the
spec was built as a plain dict before it had a type; the typed spec must give the same
bytes for every cell of the tiny study and of the default config, on a CPU and on a GPU.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from lorasweep.study import grid
from lorasweep.study.cellspec import MPS_MODES, Barrier, CellSpec, FusedRun, FusedSpec, WorkerSpec, cell_from_dict
from lorasweep.study.config import deep_merge, resolve
from lorasweep.errors import LorasweepError

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
TINY = yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text())


def studies():
    """(name, resolved study): the tiny study and the default config, planned on a CPU and for a GPU."""
    return [
        ("tiny", resolve(deep_merge(CONFIG, TINY), TINY, gpus=[])),
        ("default-cpu", resolve(CONFIG, {}, gpus=[])),
        ("default-gpu", resolve(CONFIG, {}, gpus=["NVIDIA H200"])),
    ]


def old_cell_spec(study: dict, cell: grid.Cell, base_dir: str, prompts: str) -> dict:
    """The spec as a plain dict, as the workflow built it before the type: the bytes to keep."""
    training = dict(study["training"])
    mode = {"lr_scaling": "to_target", "concurrency": "fixed_steps"}[cell.experiment]
    if mode == "fixed_steps":
        steps = study["concurrency"]["steps"]
        for key in ("target", "window", "max_steps", "early_steps", "noise_scale"):  # only a run to the target
            training.pop(key, None)
    else:
        steps = training["max_steps"]
    device = study["resolved"]["device"]
    return {
        "cell": cell.as_dict(), "training": training, "mode": mode, "steps": steps, "device": device,
        "mps": study["mps"] if device == "cuda" and cell.packing == "processes" else None,
        "base_dir": base_dir, "prompts": prompts,
    }


@pytest.mark.parametrize("name, study", studies(), ids=[name for name, _ in studies()])
def test_the_json_of_every_planned_cell_is_byte_identical_to_the_old_dicts(name, study):
    cells = grid.plan(study)
    assert cells
    devices, mps_values = set(), set()
    for cell in cells:
        spec = CellSpec.for_cell(study, cell, "results/base/embedded/model", "results/base/prompts.jsonl")
        old = json.dumps(old_cell_spec(study, cell, "results/base/embedded/model", "results/base/prompts.jsonl"),
                         sort_keys=True)
        assert spec.to_json() == old, cell.cell_id
        # and back: the launcher reads the same spec the workflow wrote
        again = CellSpec.from_json(spec.to_json())
        assert again == spec and again.to_json() == old
        devices.add(spec.device)
        mps_values.add(spec.mps)
    if name == "default-gpu":  # the GPU plan covers MPS for worker processes and none for fused packs
        assert devices == {"cuda"} and mps_values == {study["mps"], None}


def test_a_worked_example_spells_out_the_json():
    study = {"training": {"seed0": 0, "lr_scale": [1, 2], "target": 0.5, "window": 2, "max_steps": 7},
             "concurrency": {"steps": 3}, "resolved": {"device": "cuda"}, "mps": "auto"}
    lr_cell = grid.Cell(grid.LR_SCALING, 4, 8, 2e-3, 2)
    assert CellSpec.for_cell(study, lr_cell, "m", "p.jsonl").to_json() == (
        '{"base_dir": "m", "cell": {"batch_size": 8, "cell_id": "r4_bs8_lr2e-03_n2", "control": false, '
        '"experiment": "lr_scaling", "lr": 0.002, "n": 2, "packing": "processes", "rank": 4}, "device": "cuda", '
        '"mode": "to_target", "mps": "auto", "prompts": "p.jsonl", "steps": 7, "training": {"lr_scale": [1, 2], '
        '"max_steps": 7, "seed0": 0, "target": 0.5, "window": 2}}')
    fused = grid.Cell(grid.CONCURRENCY, 4, 8, 2e-3, 3, packing=grid.FUSED)
    spec = CellSpec.for_cell(study, fused, "m", "p.jsonl")
    # a fixed-step cell: the concurrency steps, no target keys, and no MPS for one fused process
    assert (spec.mode, spec.steps, dict(spec.training), spec.mps) == (grid.FIXED_STEPS, 3,
                                                                      {"seed0": 0, "lr_scale": [1, 2]}, None)
    assert spec.seeds == [0, 1, 2] and spec.fused and spec.cell_id == "r4_bs8_lr2e-03_n3_fused"


def test_a_change_of_target_changes_to_target_cells_only():
    study = studies()[0][1]
    cells = grid.plan(study)
    other = deep_merge(study, {"training": {"target": 0.99}})
    for cell in cells:
        same = CellSpec.for_cell(study, cell, "m", "p").to_json() == CellSpec.for_cell(other, cell, "m", "p").to_json()
        assert same == (cell.experiment == grid.CONCURRENCY), cell.path


def spec(**changes) -> CellSpec:
    fields = {"cell": grid.Cell(grid.LR_SCALING, 4, 8, 2e-3, 2),
              "training": {"seed0": 0, "target": 0.5, "window": 2, "max_steps": 6}, "mode": grid.TO_TARGET,
              "steps": 6, "device": "cpu", "mps": None, "base_dir": "m", "prompts": "p"}
    return CellSpec(**{**fields, **changes})


@pytest.mark.parametrize("changes, message", [
    ({"mode": "concurrency"}, "mode 'concurrency' is not one of 'to_target', 'fixed_steps'"),
    ({"mode": None}, "mode None is not one of 'to_target', 'fixed_steps'"),
    ({"steps": 0}, "steps must be a positive integer, not 0"),
    ({"steps": "6"}, "steps must be a positive integer, not '6'"),
    ({"steps": True}, "steps must be a positive integer, not True"),
    ({"steps": 6.0}, "steps must be a positive integer, not 6.0"),
    ({"device": "gpu"}, "device 'gpu' is not one of 'cpu', 'cuda'"),
    ({"mps": "on"}, "mps 'on' is not one of 'auto', 'required', 'off' (or none)"),
    ({"training": {"seed0": 0, "target": 0.5, "max_steps": 6}}, "a run to the target needs training key(s) window"),
    ({"cell": grid.Cell(grid.LR_SCALING, 4, 8, 2e-3, 2, packing="pooled")}, "packing 'pooled' is not one of"),
    ({"cell": grid.Cell(grid.LR_SCALING, 4, 8, 2e-3, 0)}, "rank, batch size and n must be positive integers"),
])
def test_a_bad_spec_is_refused_in_one_line_naming_the_cell(changes, message):
    with pytest.raises(LorasweepError) as error:
        spec(**changes)
    text = str(error.value)
    assert text.startswith(f"cell {changes.get('cell', grid.Cell(grid.LR_SCALING, 4, 8, 2e-3, 2)).cell_id}: ")
    assert message in text and "\n" not in text


def test_every_problem_is_named_at_once():
    with pytest.raises(LorasweepError) as error:
        spec(mode="typo", steps=0, device="tpu")
    assert str(error.value) == ("cell r4_bs8_lr2e-03_n2: mode 'typo' is not one of 'to_target', 'fixed_steps'; "
                                "steps must be a positive integer, not 0; device 'tpu' is not one of 'cpu', 'cuda'")


def test_a_fixed_step_spec_needs_no_target_keys():
    fixed = spec(mode=grid.FIXED_STEPS, steps=4, training={"seed0": 3})
    assert fixed.steps == 4 and fixed.seeds == [3, 4]


def test_reading_json_refuses_unknown_and_missing_keys_and_a_wrong_cell_id():
    good = spec().to_dict()
    with pytest.raises(LorasweepError, match=r"^cell r4_bs8_lr2e-03_n2: spec has unknown key\(s\) fault$"):
        CellSpec.from_dict({**good, "fault": {"kind": "raise"}})
    with pytest.raises(LorasweepError, match=r"^cell r4_bs8_lr2e-03_n2: spec has missing key\(s\) device, mps$"):
        CellSpec.from_dict({k: v for k, v in good.items() if k not in ("device", "mps")})
    with pytest.raises(LorasweepError, match=r"^cell r4_bs8_lr9e-03_n2: its fields make the cell id r4_bs8_lr2e-03_n2$"):
        cell_from_dict({**good["cell"], "cell_id": "r4_bs8_lr9e-03_n2"})
    with pytest.raises(LorasweepError, match=r"^cell spec: not JSON"):
        CellSpec.from_json("{mode: to_target")
    assert cell_from_dict(good["cell"]) == grid.Cell(grid.LR_SCALING, 4, 8, 2e-3, 2)


def test_a_spec_is_a_value_nobody_can_change_in_place():
    training = {"seed0": 0, "target": 0.5, "window": 2, "max_steps": 6, "degeneracy": {"samples": 4}}
    s = spec(training=training)
    training["target"] = 0.9
    training["degeneracy"]["samples"] = 99  # the spec holds its own copy, nested values too
    assert s.training["target"] == 0.5 and s.training["degeneracy"] == {"samples": 4}
    with pytest.raises(TypeError):
        s.training["target"] = 0.9
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 7
    assert s.to_dict()["training"]["target"] == 0.5


def test_variants_are_derived_not_patched():
    s = spec()
    harder = s.with_training(target=0.9, max_steps=9)
    # a to-target run's steps are its max_steps
    assert (harder.training["target"], harder.training["max_steps"], harder.steps) == (0.9, 9, 9)
    assert (s.training["target"], s.steps) == (0.5, 6)  # the original is unchanged
    fixed = s.replace(mode=grid.FIXED_STEPS, steps=100)
    assert fixed.with_training(max_steps=3).steps == 100  # a fixed-step run keeps its own count
    with pytest.raises(LorasweepError, match="steps must be a positive integer, not -1"):
        s.replace(steps=-1)  # a variant is validated like any spec


def test_a_worker_spec_is_the_cell_spec_plus_its_own_keys():
    s = spec()
    barrier = Barrier(ready_dir="w/ready", go="w/go", timeout_s=900)
    worker = WorkerSpec(s, seed=1, threads=2, steps_out=Path("w/steps/seed1.jsonl"), barrier=barrier)
    assert worker.to_dict() == {**s.to_dict(), "seed": 1, "threads": 2, "steps_out": "w/steps/seed1.jsonl",
                                "barrier": {"ready_dir": "w/ready", "go": "w/go", "timeout_s": 900}}
    alone = WorkerSpec(s, seed=0, threads=1, steps_out="x.jsonl", fault={"kind": "nan_loss", "step": 3})
    assert alone.to_dict() == {**s.to_dict(), "seed": 0, "threads": 1, "steps_out": "x.jsonl",
                               "fault": {"kind": "nan_loss", "step": 3}}  # no barrier: it starts at once
    with pytest.raises(LorasweepError, match="threads must be a positive integer, not 0"):
        WorkerSpec(s, seed=0, threads=0, steps_out="x.jsonl")


def test_a_fused_spec_runs_every_seed_of_the_cell_at_the_cells_lr():
    s = spec(training={"seed0": 5, "target": 0.5, "window": 2, "max_steps": 6})
    pack = FusedSpec.of_cell(s, lambda seed: f"w/seed{seed}.jsonl", threads=4)
    assert pack.runs == (FusedRun(5, 2e-3, "w/seed5.jsonl"), FusedRun(6, 2e-3, "w/seed6.jsonl"))
    assert pack.to_dict() == {**s.to_dict(), "threads": 4, "runs": [
        {"seed": 5, "lr": 2e-3, "steps_out": "w/seed5.jsonl"}, {"seed": 6, "lr": 2e-3, "steps_out": "w/seed6.jsonl"}]}
    with pytest.raises(LorasweepError, match="a fused pack needs at least one FusedRun"):
        FusedSpec(s, runs=[], threads=1)


def test_the_spec_accepts_exactly_the_mps_values_the_config_schema_allows():
    # the daemon reads MPS_MODES itself; the schema is written by hand and must not drift from it
    from lorasweep.study.config import load_schema

    assert tuple(load_schema()["properties"]["mps"]["enum"]) == MPS_MODES
