"""Loading, validating and resolving the study's configuration (no torch here).

Resolution order, last wins: ``config.yaml`` < the preset of the chosen scale
(``scales.cpu`` or ``scales.gpu``) < what the user passed with ``--config`` or
``--configfile``. The scale is picked from the hardware when it is ``auto``.
Every mistake becomes one :class:`LorasweepError` naming the key, the value and
what is allowed.
"""

import copy
import difflib
import hashlib
import json
from pathlib import Path

import jsonschema
import yaml

from .. import formatting
from .. import hardware
from ..errors import LorasweepError
from ..definitions.rewards import check_reward, reward_file

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
MPS_CLIENT_LIMIT = 48  # clients per MPS server on Volta and newer


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def typed(value):
    """Values from ``--config key={...}`` arrive as strings (Snakemake parses nested ones
    with YAML's BaseLoader); give them back their YAML types: '1.5' -> 1.5, '1e-3' -> 0.001."""
    if isinstance(value, dict):
        return {typed(k): typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if not isinstance(value, str):
        return value
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    parsed = yaml.safe_load(value) if value.strip() else value
    return parsed if isinstance(parsed, (bool, type(None))) and value.lower() in ("true", "false", "null", "~") else value


def _key_path(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _allowed(error: jsonschema.ValidationError) -> str:
    """What the schema allows, in words, for the rule that failed."""
    rule, bound = error.validator, error.validator_value
    if rule == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known)) if isinstance(error.instance, dict) else []
        return f"unknown key(s) {', '.join(extra)}; allowed keys: {', '.join(known)}"
    if rule == "enum":
        return "one of " + ", ".join(repr(v) for v in bound)
    if rule == "exclusiveMinimum":
        return f"a number greater than {bound}"
    if rule == "minimum":
        return f"a number of at least {bound}"
    if rule == "maximum":
        return f"a number of at most {bound}"
    if rule == "type":
        return f"a value of type {bound}"
    if rule == "minItems":
        return f"a list of at least {bound} item(s)"
    if rule == "uniqueItems":
        repeated = _repeated(error.instance) if isinstance(error.instance, list) else []
        return "a list without duplicates" + (f" ({', '.join(map(repr, repeated))} more than once)" if repeated else "")
    if rule == "const":
        return repr(bound)
    if rule == "required":
        return f"a mapping with the key(s) {', '.join(bound)}"
    if rule == "minLength":
        return "a non-empty string"
    if rule in ("oneOf", "anyOf"):
        options = [_allowed_from_schema(s) for s in bound]
        return " or ".join(options)
    return error.message


def _repeated(items: list) -> list:
    seen, repeated = [], []
    for item in items:
        if item in seen and item not in repeated:
            repeated.append(item)
        seen.append(item)
    return repeated


REF_WORDS = {
    "positive_int": "a positive integer",
    "positive_number": "a positive number",
    "learning_rate": "a learning rate in (0, 1]",
}


def _allowed_from_schema(schema: dict) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return REF_WORDS.get(name, name.replace("_", " "))
    if schema.get("type") == "object":
        return "a mapping"
    if "const" in schema:
        return repr(schema["const"])
    return schema.get("type", "a value")


def _schema_error_message(error: jsonschema.ValidationError) -> str:
    # report the failing rule of a oneOf branch when one branch clearly applies (the value has
    # its type, or the error lies deeper inside it), else the alternatives the oneOf allows
    if error.validator in ("oneOf", "anyOf") and error.context:
        deeper = [e for e in error.context if len(e.absolute_path) > len(error.absolute_path)]
        specific = [e for e in error.context if e.validator not in ("type", "const", "enum")]
        if deeper:
            error = max(deeper, key=lambda e: len(e.absolute_path))
        elif specific and not isinstance(error.instance, (dict, list)):
            error = specific[0]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return _unknown_keys_message(error)
    key = _key_path(error.absolute_path)
    return f"config key '{key}': value {error.instance!r} is not allowed; expected {_allowed(error)}"


def _unknown_keys_message(error: jsonschema.ValidationError) -> str:
    """One line for misspelt keys: each unknown key, the nearest allowed one, all allowed ones.

    The mapping that holds the unknown key is not printed: at the top level it is the
    whole resolved config.
    """
    known = sorted(error.schema.get("properties", {}))
    extra = sorted((k for k in error.instance if k not in known), key=str)
    parent = _key_path(error.absolute_path) if error.absolute_path else ""
    prefix = f"{parent}." if parent else ""
    names = []
    for key in extra:
        nearest = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f" (did you mean '{prefix}{nearest[0]}'?)" if nearest else ""
        names.append(f"'{prefix}{key}'{hint}")
    where = f"in '{parent}'" if parent else "at the top level"
    message = f"config key{'s' if len(names) > 1 else ''} {', '.join(names)} {'is' if len(names) == 1 else 'are'} unknown"
    return message + f"; allowed keys {where}: {', '.join(known)}"


def load_schema(path=SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def validate(config: dict, gpu: bool, schema: dict = None) -> None:
    """Schema check, then the rules a schema cannot say. Raises LorasweepError."""
    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(list(e.absolute_path))))
    if errors:
        raise LorasweepError(_schema_error_message(jsonschema.exceptions.best_match(errors)))

    training = config["training"]
    check_reward(training["reward"])  # a registered name, or a file that defines the function
    if reward_file(training["reward"]) is None and not 0 < training["target"] <= 1:
        bound = "greater than 0" if training["target"] <= 0 else "of at most 1"
        raise LorasweepError(f"config key 'training.target': value {training['target']!r} is not allowed; expected a "
                             f"number {bound} (the registered rewards score in [0, 1])")
    _check_base_paths(config["base"])
    if training["early_steps"] > training["max_steps"]:
        raise LorasweepError(
            f"config key 'training.early_steps': value {training['early_steps']} is not allowed; expected at most "
            f"training.max_steps ({training['max_steps']}): every run must record the steps its early reward is taken over; "
                f"set both, e.g. --config 'training={{max_steps: {training['max_steps']}, early_steps: {training['max_steps']}}}'"
        )
    held_out = training["degeneracy"]["samples"]
    if config["base"]["num_prompts"] <= held_out:
        raise LorasweepError(
            f"config key 'base.num_prompts': value {config['base']['num_prompts']} is not allowed; expected more "
            f"than training.degeneracy.samples ({held_out}), the prompts held out of training for the degeneracy check"
        )
    if training["degeneracy"]["max_distinct_flag"] >= held_out:
        raise LorasweepError(
            f"config key 'training.degeneracy.max_distinct_flag': value {training['degeneracy']['max_distinct_flag']} "
            f"is not allowed; expected fewer than training.degeneracy.samples ({held_out}), or every run is flagged"
        )
    group = training["generations_per_prompt"]
    lr = config["lr_scaling"]
    sizes = [("lr_scaling.batch_sizes", b) for b in lr["batch_sizes"]]
    sizes += [("lr_scaling.base_batch_size", lr["base_batch_size"])]
    sizes += [("lr_scaling.controls[].batch_size", c["batch_size"]) for c in lr["controls"]]
    sizes += [("concurrency.settings[].batch_size", s["batch_size"]) for s in config["concurrency"]["settings"]]
    for key, size in sizes:
        if size % group:
            raise LorasweepError(
                f"config key '{key}': value {size} is not allowed; expected a multiple of "
                f"training.generations_per_prompt ({group}), since a batch counts completions"
            )
    _check_lr_by_rank(lr["base_lr"], lr["ranks"], "lr_scaling.base_lr")
    _check_concurrency_levels(config["concurrency"]["settings"])
    for i, control in enumerate(lr["controls"]):
        _check_lr_by_rank(control["lr"], lr["ranks"], f"lr_scaling.controls[{i}].lr")
    _check_seed_plan(lr["n"])
    if gpu:
        levels = [("lr_scaling.n", lr["n"] if not isinstance(lr["n"], dict) else max(lr["n"]["initial"],
                                                                                   lr["n"].get("block", 1)))]
        levels += [(f"concurrency.settings[{i}].levels", n)
                   for i, s in enumerate(config["concurrency"]["settings"]) for n in s["levels"]]
        for key, n in levels:
            if n > MPS_CLIENT_LIMIT:
                raise LorasweepError(
                    f"config key '{key}': value {n} is not allowed; expected at most {MPS_CLIENT_LIMIT} "
                    f"concurrent workers, the MPS client limit of one GPU"
                )


def _check_base_paths(base: dict) -> None:
    """A local base needs its folder; a prompts file must exist and be .txt or .jsonl."""
    if base["source"] == "local":
        path = base.get("model_path")
        if not path:
            raise LorasweepError("config key 'base.model_path': value None is not allowed with base.source local; "
                                 "expected the model folder (as save_pretrained writes it)")
        if not (Path(path) / "config.json").is_file():
            raise LorasweepError(f"config key 'base.model_path': value {path!r} is not allowed; expected a folder "
                                 f"with a config.json (looked in {Path(path).resolve()})")
    prompts = base.get("prompts_path")
    if prompts:
        if Path(prompts).suffix not in (".txt", ".jsonl"):
            raise LorasweepError(f"config key 'base.prompts_path': value {prompts!r} is not allowed; expected a .txt "
                                 "or .jsonl file")
        if not Path(prompts).is_file():
            raise LorasweepError(f"config key 'base.prompts_path': value {prompts!r} is not allowed; the file does not "
                                 f"exist (looked for {Path(prompts).resolve()})")


def _check_scale_keys(config: dict) -> None:
    """``scale`` and ``scales`` are read before the schema check (they pick the preset): check them first."""
    schema = load_schema()["properties"]
    scale = config.get("scale", "auto")
    if not isinstance(scale, str) or scale not in schema["scale"]["enum"]:
        raise LorasweepError(
            f"config key 'scale': value {scale!r} is not allowed; expected one of "
            + ", ".join(repr(v) for v in schema["scale"]["enum"])
        )
    scales = config.get("scales") or {}
    if not isinstance(scales, dict):
        raise LorasweepError(f"config key 'scales': value {scales!r} is not allowed; expected a mapping with gpu and cpu presets")
    for name, preset in scales.items():
        if preset is not None and not isinstance(preset, dict):
            raise LorasweepError(
                f"config key 'scales.{name}': value {preset!r} is not allowed; expected a mapping of config keys"
            )


def _check_concurrency_levels(settings: list) -> None:
    """Two settings with the same batch size and lr must not list the same level: that would be one cell twice."""
    seen = {}
    for i, setting in enumerate(settings):
        key = (setting["batch_size"], float(setting["lr"]))
        for n in setting["levels"]:
            if (key, n) in seen:
                raise LorasweepError(
                    f"config key 'concurrency.settings[{i}].levels': value {setting['levels']!r} is not allowed; "
                    f"expected levels not already listed for batch_size {key[0]}, lr {formatting.lr(key[1])} "
                    f"(level {n} is in concurrency.settings[{seen[key, n]}] too)"
                )
            seen[key, n] = i


def _check_seed_plan(n) -> None:
    """Blocks of seeds must add up to max: initial + k x block = max for some k."""
    if not isinstance(n, dict):
        return
    initial, block, top = n["initial"], n.get("block", n["initial"]), n["max"]
    if top < initial or (top - initial) % block:
        raise LorasweepError(f"config key 'lr_scaling.n': value {n!r} is not allowed; expected max = initial + "
                             f"k x block for a whole number k >= 0 (here {initial} + k x {block})")


def _check_lr_by_rank(value, ranks, key):
    if isinstance(value, dict):
        missing = [r for r in ranks if r not in {int(k) for k in value}]
        if missing:
            raise LorasweepError(
                f"config key '{key}': value {value!r} is not allowed; expected a learning rate for every "
                f"rank in lr_scaling.ranks (missing: {', '.join(map(str, missing))})"
            )


def lr_for_rank(value, rank: int) -> float:
    """A learning rate given as one number, or as a map rank -> learning rate."""
    if isinstance(value, dict):
        return float({int(k): v for k, v in value.items()}[rank])
    return float(value)


def resolve(config: dict, overrides: dict = None, gpus: list = None) -> dict:
    """Apply the scale preset under the user's overrides, validate, and record the choice.

    ``config`` is what Snakemake loaded (config.yaml with overrides already on
    top); ``overrides`` are the user's own values, re-applied over the preset.
    ``scale: gpu`` is accepted without a GPU on this host, which may only plan
    (a dry run, a cluster's login node); ``require_gpu_here`` guards a local run.
    """
    overrides = typed(overrides or {})
    gpus = hardware.gpu_names() if gpus is None else gpus
    _check_scale_keys(config)
    scale = config.get("scale", "auto")
    if scale == "auto":
        scale = "gpu" if gpus else "cpu"
        how = f"auto: {'found ' + gpus[0] if gpus else 'no CUDA GPU found'}"
    else:
        how = "set in the config"
    preset = (config.get("scales") or {}).get(scale, {})
    resolved = deep_merge(deep_merge(config, preset), overrides)
    resolved["scale"] = scale
    validate(resolved, gpu=scale == "gpu")
    if scale == "gpu" and not gpus:
        how = "set in the config; planned on a host without a GPU, so the jobs need one where they run"
    resolved.pop("scales", None)
    # a reward file's content decides every run: its hash is part of the study (and of each cell's spec)
    digest = check_reward(resolved["training"]["reward"])
    if digest:
        resolved["training"]["reward_sha256"] = digest
    resolved["resolved"] = {"scale": scale, "scale_choice": how, "device": "cuda" if scale == "gpu" else "cpu",
                            "gpus": list(gpus)}
    return resolved


def require_gpu_here(resolved: dict) -> None:
    """A GPU study run on this host needs a GPU here (a dry run or a cluster run does not)."""
    if resolved["resolved"]["device"] == "cuda" and not resolved["resolved"]["gpus"]:
        raise LorasweepError(
            "config key 'scale': value 'gpu' is not allowed here; no CUDA GPU was found (nvidia-smi -L). "
            "A dry run or a cluster run (--executor) may plan a GPU study on a host without one"
        )


# How the planner chose the scale (its wording, the GPUs the planning host lists): true of
# the host that planned, not of the study, and different on a cluster's login node
PLANNING_NOTES = ("scale_choice", "gpus")


def study_record(resolved: dict) -> dict:
    """The resolved config less the planning host's notes: what decides the study's results.

    It is what ``results/study/config.json`` holds and what the config hash covers, so
    that planning the same study on another host (or a busier one) changes neither.
    """
    record = dict(resolved)
    record["resolved"] = {k: v for k, v in resolved["resolved"].items() if k not in PLANNING_NOTES}
    return record


def config_hash(resolved: dict) -> str:
    """Short content hash of a study's record (names archives, shows in table headers)."""
    resolved = study_record(resolved) if "resolved" in resolved else resolved
    # through JSON first: the dict Snakemake holds (int keys, e.g. base_lr by rank) and
    # config.json read back (str keys) must hash alike
    plain = json.loads(json.dumps(resolved, default=str))
    canonical = json.dumps(plain, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
