"""RL prompts: the opening tokens of stories, each one once.

A prompt file is JSON lines: a first line ``{"meta": {...}}`` saying how the
prompts were made, then one ``{"ids": [...]}`` per prompt.
"""

from itertools import islice
from pathlib import Path

from ..atomic import read_jsonl, write_jsonl
from ..errors import LorasweepError

ENCODE_CHUNK = 1000  # stories encoded at a time, so a long stream stops early


def build_prompts(stories, tokenizer, prompt_tokens: int = 8, num_prompts: int = 10000,
                  min_prompts: int = 10) -> list[list[int]]:
    """The first ``prompt_tokens`` ids of each story, without duplicates, in order.

    ``stories`` may be any iterable (a hub stream included); stories shorter than
    ``prompt_tokens`` are skipped.
    """
    stories = iter(stories)
    seen, prompts = set(), []
    while len(prompts) < num_prompts:
        chunk = list(islice(stories, ENCODE_CHUNK))
        if not chunk:
            break
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            prompt = tuple(ids[:prompt_tokens])
            if len(prompt) < prompt_tokens or prompt in seen:
                continue
            seen.add(prompt)
            prompts.append(list(prompt))
            if len(prompts) == num_prompts:
                break
    if len(prompts) < min_prompts:
        raise LorasweepError(
            f"only {len(prompts)} distinct prompts of {prompt_tokens} tokens could be built "
            f"from the stories; at least {min_prompts} are needed"
        )
    return prompts


def read_prompts_file(path) -> list:
    """The prompts of a user's file as text: a .txt file one per line (blank lines skipped), or a .jsonl
    file with a "prompt" field per line."""
    import json

    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".txt":
        return [line for line in lines if line.strip()]
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise LorasweepError(f"{path}, line {number}: not JSON ({error})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise LorasweepError(f"{path}, line {number}: expected an object with a \"prompt\" string")
        prompts.append(row["prompt"])
    return prompts


def write_prompts(path, prompts, meta: dict) -> Path:
    return write_jsonl(path, [{"meta": meta}] + [{"ids": list(ids)} for ids in prompts])


def read_prompts(path) -> list[list[int]]:
    return [row["ids"] for row in read_jsonl(path) if "ids" in row]


def read_prompts_meta(path) -> dict:
    rows = read_jsonl(path)
    return rows[0].get("meta", {}) if rows else {}
