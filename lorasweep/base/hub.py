"""The Hugging Face hub as a source of the base model and the stories.

Deciding whether the hub is usable must be quick on a machine without network:
the local cache is checked first, offline flags are honoured, and the endpoint
probe runs in a daemon thread with a deadline, so that neither a slow DNS
lookup nor a silent firewall can stall the pipeline for minutes.
torch and transformers are imported only where a model is actually fetched.
"""

import os
import threading
import time
import urllib.error
import urllib.request

from ..errors import LorasweepError

SOURCES = ("auto", "hub", "embedded", "local")
DEFAULT_ENDPOINT = "https://huggingface.co"
# The file whose presence in the cache (or on the hub) stands for the repository.
PROBE_FILE = {"model": "config.json", "dataset": "README.md"}


def _offline() -> bool:
    flags = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def _cached(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    # A path when cached; None or a "known missing" marker otherwise.
    found = try_to_load_from_cache(repo_id, PROBE_FILE[repo_type], repo_type=repo_type)
    return isinstance(found, str)


def _probe_url(repo_id: str, repo_type: str) -> str:
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{endpoint}/{prefix}{repo_id}/resolve/main/{PROBE_FILE[repo_type]}"


def _head(url: str, timeout_s: float) -> tuple[bool, str]:
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return True, f"hub answered {response.status} for {url}"
    except urllib.error.HTTPError as error:
        return False, f"hub answered {error.code} for {url}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        return False, f"hub unreachable at {url}: {getattr(error, 'reason', error)}"


def hub_status(model_id: str, timeout_s: float = 3.0, repo_type: str = "model") -> tuple[bool, str]:
    """(usable, reason): is ``model_id`` in the local cache or on a reachable hub?"""
    if _cached(model_id, repo_type):
        return True, f"{model_id} is in the local Hugging Face cache"
    if _offline():
        return False, f"{model_id} is not cached and HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set"

    url = _probe_url(model_id, repo_type)
    answer = []
    # A daemon thread bounds the whole probe, name resolution included; if it
    # hangs past the deadline it is abandoned and dies with the process.
    probe = threading.Thread(target=lambda: answer.append(_head(url, timeout_s)), daemon=True)
    started = time.monotonic()
    probe.start()
    probe.join(timeout_s)
    if not answer:
        return False, f"hub gave no answer within {timeout_s:g}s at {url}"
    usable, reason = answer[0]
    return usable, f"{reason} ({time.monotonic() - started:.1f}s)"


def resolve_source(source: str, model_id: str, timeout_s: float = 3.0) -> tuple[str, str]:
    """("hub" | "embedded" | "local", reason) for the configured ``base.source``."""
    if source not in SOURCES:
        raise LorasweepError(f"base.source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source in ("embedded", "local"):
        return source, f"base.source is {source}"
    usable, reason = hub_status(model_id, timeout_s)
    if usable:
        return "hub", reason
    if source == "hub":
        raise LorasweepError(
            f"base model {model_id} is not available from the hub: {reason}. "
            "Set base.source: embedded (or pass --config base='{source: embedded}') "
            "to use the embedded default base model"
        )
    return "embedded", f"hub not usable, embedded default used: {reason}"


def model_config(model_id: str) -> dict:
    """The hub model's config.json as a dict (from the local cache, else downloaded), for planning."""
    import json

    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(model_id, "config.json")
    except Exception as error:  # noqa: BLE001 - the hub client raises many kinds; all mean "not available"
        raise LorasweepError(f"could not read the config.json of {model_id} from the hub: {error}") from None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def fetch_hub_base(model_id: str, out_dir) -> None:
    """Download model and tokenizer of ``model_id`` into the base folder ``out_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .base_model import save_base

    try:
        model = AutoModelForCausalLM.from_pretrained(model_id)
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except OSError as error:
        raise LorasweepError(f"could not load base model {model_id} from the hub: {error}") from error
    record = {"source": "hub", "model_id": model_id, "num_parameters": model.num_parameters()}
    save_base(out_dir, model, tokenizer, "hub.json", record)


def hub_stories(dataset_id: str, column: str, limit: int | None = None):
    """Yield up to ``limit`` stories (column ``column``) of the dataset's train split."""
    from datasets import load_dataset

    try:
        rows = load_dataset(dataset_id, split="train", streaming=True)
    except Exception as error:  # datasets raises many kinds; all mean "not available"
        raise LorasweepError(f"could not open dataset {dataset_id} from the hub: {error}") from error
    for count, row in enumerate(rows):
        if limit is not None and count >= limit:
            return
        if column not in row:
            raise LorasweepError(
                f"dataset {dataset_id} has no column {column!r}; it has {', '.join(row)}"
            )
        yield row[column]
