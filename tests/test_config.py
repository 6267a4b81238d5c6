import copy
from pathlib import Path

import pytest
import yaml

from lorasweep.study.config import deep_merge, load_schema, require_gpu_here, resolve
from lorasweep.errors import LorasweepError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def resolve_with(overrides, gpus=()):
    config = deep_merge(DEFAULT, overrides)
    return resolve(config, overrides, gpus=list(gpus))


def test_default_config_resolves_to_the_cpu_preset_without_a_gpu():
    r = resolve_with({})
    assert r["scale"] == "cpu" and r["resolved"]["device"] == "cpu"
    assert r["lr_scaling"]["batch_sizes"] == DEFAULT["scales"]["cpu"]["lr_scaling"]["batch_sizes"]
    assert "scales" not in r


def test_default_config_keeps_the_study_settings_on_a_gpu():
    r = resolve_with({}, gpus=["NVIDIA H100"])
    assert r["scale"] == "gpu"
    assert r["lr_scaling"]["batch_sizes"] == [32, 64, 128]
    assert r["training"]["target"] == 0.9 and r["training"]["generations_per_prompt"] == 16


def test_training_defaults_are_the_studys_loss_schedule_and_degeneracy_rule():
    for gpus in ((), ["NVIDIA H100"]):
        t = resolve_with({}, gpus=gpus)["training"]
        assert (t["loss_type"], t["lr_schedule"], t["schedule_steps"]) == ("grpo", "linear", 2000)
        assert t["degeneracy"] == {"samples": 20, "max_distinct_flag": 7, "min_jaccard_flag": 0.18}


def test_user_overrides_win_over_the_scale_preset():
    r = resolve_with({"training": {"max_steps": 70}})
    assert r["training"]["max_steps"] == 70
    assert r["training"]["max_new_tokens"] == DEFAULT["scales"]["cpu"]["training"]["max_new_tokens"]


def test_early_steps_beyond_max_steps_is_refused_with_both_keys_named():
    with pytest.raises(LorasweepError, match=r"'training\.early_steps': value 20 .* at most training\.max_steps \(7\)"):
        resolve_with({"training": {"max_steps": 7}})
    assert resolve_with({"training": {"max_steps": 7, "early_steps": 7}})["training"]["early_steps"] == 7


def test_scale_can_be_forced():
    assert resolve_with({"scale": "gpu"}, gpus=["x"])["scale"] == "gpu"
    require_gpu_here(resolve_with({"scale": "gpu"}, gpus=["x"]))
    require_gpu_here(resolve_with({"scale": "cpu"}))


def test_a_gpu_study_is_planned_without_a_gpu_but_not_run_here():
    # a cluster's login node or a dry run plans the study's grid; a local run is refused
    r = resolve_with({"scale": "gpu"})
    assert r["resolved"]["device"] == "cuda" and r["resolved"]["gpus"] == []
    assert "without a GPU" in r["resolved"]["scale_choice"]
    assert r["lr_scaling"]["batch_sizes"] == DEFAULT["lr_scaling"]["batch_sizes"]
    with pytest.raises(LorasweepError, match="'scale': value 'gpu' is not allowed here; no CUDA GPU"):
        require_gpu_here(r)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"lr_scaling": {"base_lr": 0}}, r"'lr_scaling\.base_lr'.*0.*greater than 0"),
        ({"lr_scaling": {"base_lr": -1e-3}}, r"'lr_scaling\.base_lr'.*-0\.001"),
        ({"concurrency": {"settings": [{"batch_size": 32, "lr": 0.0, "levels": [1]}]}}, r"'concurrency\.settings\[0\]\.lr'.*0\.0.*greater than 0"),
        ({"lr_scaling": {"ranks": [4, 0]}}, r"'lr_scaling\.ranks\[1\]'.*0.*at least 1"),
        ({"concurrency": {"rank": -2}}, r"'concurrency\.rank'.*-2.*at least 1"),
        ({"lr_scaling": {"batch_sizes": [8, 12]}}, r"'lr_scaling\.batch_sizes'.*12.*multiple of training\.generations_per_prompt \(8\)"),
        ({"training": {"reward": "length_bonus"}}, r"'training\.reward'.*'length_bonus'.*sentence_length_10_smooth"),
        ({"training": {"target": 0}}, r"'training\.target'.*0.*greater than 0"),
        ({"training": {"target": 1.5}}, r"'training\.target'.*1\.5.*at most 1"),
        ({"training": {"taget": 0.9}}, r"'training\.taget' \(did you mean 'training\.target'\?\) is unknown; allowed keys in 'training': .*target"),
        ({"colour": "red"}, r"config key 'colour' is unknown; allowed keys at the top level: "),
        ({"lr_scaling": {"ranks": []}}, r"'lr_scaling\.ranks'.*at least 1 item"),
        ({"lr_scaling": {"batch_sizes": [8, 8]}}, r"'lr_scaling\.batch_sizes'.*without duplicates"),
        ({"training": {"max_steps": "many"}}, r"'training\.max_steps'.*'many'"),
        ({"scale": "tpu"}, r"'scale'.*'tpu'.*one of 'auto', 'gpu', 'cpu'"),
        ({"lr_scaling": {"ranks": [4, 32, 8]}}, r"'lr_scaling\.base_lr'.*missing: 8"),
        ({"training": {"loss_type": "sum"}}, r"'training\.loss_type'.*'sum'.*one of 'grpo', 'dapo', 'bnpo', 'dr_grpo'"),
        ({"training": {"lr_schedule": "cosine"}}, r"'training\.lr_schedule'.*'cosine'.*one of 'linear', 'constant'"),
        ({"training": {"schedule_steps": 0}}, r"'training\.schedule_steps'.*0.*at least 1"),
        ({"training": {"degeneracy": {"min_jaccard_flag": 1.5}}}, r"'training\.degeneracy\.min_jaccard_flag'.*1\.5.*at most 1"),
        ({"training": {"degeneracy": {"max_distinct_flag": 20}}}, r"'training\.degeneracy\.max_distinct_flag'.*20.*fewer than training\.degeneracy\.samples \(20\)"),
        ({"base": {"num_prompts": 20}}, r"'base\.num_prompts'.*20.*more than training\.degeneracy\.samples \(20\)"),
    ],
)
def test_bad_values_get_one_message_naming_key_value_and_what_is_allowed(overrides, pattern):
    with pytest.raises(LorasweepError, match=pattern):
        resolve_with(overrides)


def test_more_workers_than_mps_clients_are_rejected_on_a_gpu_only():
    overrides = {"lr_scaling": {"n": 49}}
    with pytest.raises(LorasweepError, match=r"'lr_scaling\.n'.*49.*at most 48"):
        resolve_with(overrides, gpus=["NVIDIA H200"])
    assert resolve_with({"scales": {"cpu": {"lr_scaling": {"n": 49}}}})["lr_scaling"]["n"] == 49


def test_resolve_does_not_modify_its_input():
    config = copy.deepcopy(DEFAULT)
    resolve(config, {})
    assert config == DEFAULT


def test_config_hash_is_the_same_before_and_after_a_json_round_trip():
    import json

    from lorasweep.study.config import config_hash

    d = {"base_lr": {4: 1e-3, 32: 5e-4}, "x": [1, 2]}
    assert config_hash(d) == config_hash(json.loads(json.dumps(d)))
    assert config_hash(d) != config_hash({**d, "x": [2, 1]})


@pytest.mark.parametrize(
    "overrides, message",
    [
        # wrong types
        ({"lr_scaling": {"n": 2.5}}, "config key 'lr_scaling.n': value 2.5 is not allowed; expected a positive integer or a mapping"),
        ({"lr_scaling": {"enabled": "yes"}}, "config key 'lr_scaling.enabled': value 'yes' is not allowed; expected a value of type boolean"),
        ({"concurrency": {"settings": [{"batch_size": 16, "lr": "fast", "levels": [1]}]}},
         "config key 'concurrency.settings[0].lr': value 'fast' is not allowed; expected a value of type number"),
        ({"concurrency": {"settings": [{"batch_size": 16, "lr": 1e-3, "levels": "1,2"}]}},
         "config key 'concurrency.settings[0].levels': value '1,2' is not allowed; expected a value of type array"),
        ({"training": {"threads_per_worker": "many"}},
         "config key 'training.threads_per_worker': value 'many' is not allowed; expected 'auto' or a positive integer"),
        ({"lr_scaling": {"base_lr": "fast"}},
         "config key 'lr_scaling.base_lr': value 'fast' is not allowed; expected a learning rate in (0, 1] or a mapping"),
        ({"scale": ["cpu"]}, "config key 'scale': value ['cpu'] is not allowed; expected one of 'auto', 'gpu', 'cpu'"),
        ({"scales": 5}, "config key 'scales': value 5 is not allowed; expected a mapping with gpu and cpu presets"),
        ({"scales": {"cpu": 5}}, "config key 'scales.cpu': value 5 is not allowed; expected a mapping of config keys"),
        ({"training": None}, "config key 'training': value None is not allowed; expected a value of type object"),
        # empty lists
        ({"concurrency": {"settings": []}}, "config key 'concurrency.settings': value [] is not allowed; expected a list of at least 1 item(s)"),
        ({"concurrency": {"settings": [{"batch_size": 16, "lr": 1e-3, "levels": []}]}},
         "config key 'concurrency.settings[0].levels': value [] is not allowed; expected a list of at least 1 item(s)"),
        ({"training": {"lora_targets": []}}, "config key 'training.lora_targets': value [] is not allowed; expected a list of at least 1 item(s)"),
        # duplicates
        ({"concurrency": {"settings": [{"batch_size": 16, "lr": 1e-3, "levels": [1, 2, 2]}]}},
         "config key 'concurrency.settings[0].levels': value [1, 2, 2] is not allowed; expected a list without duplicates (2 more than once)"),
        ({"concurrency": {"settings": [{"batch_size": 16, "lr": 1e-3, "levels": [1, 2]}, {"batch_size": 16, "lr": 1.0e-3, "levels": [4, 2]}]}},
         "config key 'concurrency.settings[1].levels': value [4, 2] is not allowed; expected levels not already listed "
         "for batch_size 16, lr 1e-3 (level 2 is in concurrency.settings[0] too)"),
        ({"lr_scaling": {"ranks": [4, 4]}}, "config key 'lr_scaling.ranks': value [4, 4] is not allowed; expected a list without duplicates (4 more than once)"),
    ],
)
def test_wrong_types_empty_lists_and_duplicates_get_the_whole_message(overrides, message):
    with pytest.raises(LorasweepError) as error:
        resolve_with(overrides)
    assert str(error.value) == message


def test_the_same_levels_in_different_settings_are_fine():
    settings = [{"batch_size": 16, "lr": 1e-3, "levels": [1, 2]}, {"batch_size": 16, "lr": 2e-3, "levels": [1, 2]}]
    assert resolve_with({"concurrency": {"settings": settings}})["concurrency"]["settings"] == settings


def test_concurrency_levels_above_the_mps_client_limit_name_their_setting_on_a_gpu():
    settings = [{"batch_size": 128, "lr": 1.2e-3, "levels": [3]}, {"batch_size": 32, "lr": 3e-4, "levels": [12, 64]}]
    with pytest.raises(LorasweepError, match=r"^config key 'concurrency\.settings\[1\]\.levels': value 64 .*at most 48"):
        resolve_with({"concurrency": {"settings": settings}}, gpus=["NVIDIA H200"])


# the allowed keys as the schema lists them (sorted), so that a new key does not break these tests
SCHEMA = load_schema()["properties"]
TOP_LEVEL_KEYS = ", ".join(sorted(SCHEMA))
TRAINING_KEYS = ", ".join(sorted(SCHEMA["training"]["properties"]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        # the mapping holding the key (at the top level: the whole config) is not printed
        ({"trainning": {"max_steps": 10}},
         f"config key 'trainning' (did you mean 'training'?) is unknown; allowed keys at the top level: {TOP_LEVEL_KEYS}"),
        ({"training": {"targt": 0.5}},
         f"config key 'training.targt' (did you mean 'training.target'?) is unknown; allowed keys in 'training': {TRAINING_KEYS}"),
        # nothing close: no guess
        ({"colour": "red"}, f"config key 'colour' is unknown; allowed keys at the top level: {TOP_LEVEL_KEYS}"),
        # several at once, each with its own guess
        ({"training": {"windw": 5, "qqq": 1}},
         f"config keys 'training.qqq', 'training.windw' (did you mean 'training.window'?) are unknown; "
         f"allowed keys in 'training': {TRAINING_KEYS}"),
        # inside a list item
        ({"concurrency": {"settings": [{"batch_size": 16, "lr": 1e-3, "levels": [1], "level": 2}]}},
         "config key 'concurrency.settings[0].level' (did you mean 'concurrency.settings[0].levels'?) is unknown; "
         "allowed keys in 'concurrency.settings[0]': batch_size, levels, lr"),
    ],
)
def test_an_unknown_key_is_one_line_with_the_nearest_allowed_key(overrides, message):
    with pytest.raises(LorasweepError) as error:
        resolve_with(overrides)
    assert str(error.value) == message
    assert "\n" not in message and "{" not in message


@pytest.mark.parametrize("overrides", [{"lr_scaling": {"packing": "threads"}}, {"concurrency": {"packing": ["mps"]}},
                                       {"concurrency": {"fused_levels": []}}])
def test_packing_is_validated(overrides):
    with pytest.raises(LorasweepError) as error:
        resolve_with(overrides)
    key = next(iter(overrides)) + "." + next(iter(next(iter(overrides.values()))))
    assert str(error.value).startswith(f"config key '{key}")


def test_the_default_packing_runs_lr_scaling_in_processes_and_measures_both_series():
    # on a GPU the study's way: n worker processes under MPS; on a CPU one fused pack per core (README)
    gpu = resolve(DEFAULT, {"scale": "gpu"}, gpus=["H200"])
    assert gpu["lr_scaling"]["packing"] == "processes" and gpu["lr_scaling"]["n"] == 3
    cpu = resolve_with({})
    assert cpu["lr_scaling"]["packing"] == "fused" and cpu["lr_scaling"]["n"] == 6
    for r in (gpu, cpu):
        assert r["concurrency"]["packing"] == ["processes", "fused"] and r["concurrency"]["fused_levels"] is None
