"""Rewards on token ids, one function each, looked up by name in ``REWARDS``.

A reward takes the completion's token ids (up to but excluding the stop token),
the tokenizer's sentence-delimiter ids, and returns a float. Working on ids keeps
text decoding out of the training step.
"""

import ast
import hashlib
import importlib.util
import re
from pathlib import Path
from typing import Callable, Sequence

RewardFn = Callable[[Sequence[int], frozenset], float]

REWARDS: dict[str, RewardFn] = {}


def register(name: str):
    def add(fn: RewardFn) -> RewardFn:
        REWARDS[name] = fn
        return fn

    return add


def sentence_lengths(ids: Sequence[int], delimiters: frozenset) -> list[int]:
    """Token counts of the sentences in ``ids``.

    A sentence is a maximal run of non-delimiter tokens; the delimiter itself is
    not counted and empty runs (".." or a leading ".") are not sentences. The
    last run counts even without a closing delimiter: an unfinished fragment is
    scored like any other sentence, as in the study.
    """
    lengths, run = [], 0
    for token in ids:
        if token in delimiters:
            if run:
                lengths.append(run)
            run = 0
        else:
            run += 1
    if run:
        lengths.append(run)
    return lengths


def _sentence_length_smooth(ids, delimiters, target: int, slope: float) -> float:
    lengths = sentence_lengths(ids, delimiters)
    if not lengths:
        return 0.0
    return sum(max(0.0, 1.0 - slope * abs(target - n)) for n in lengths) / len(lengths)


@register("sentence_length_10_smooth")
def sentence_length_10_smooth(ids, delimiters) -> float:
    """Mean over sentences of max(0, 1 - 0.2 * |10 - n|); 0 without a sentence."""
    return _sentence_length_smooth(ids, delimiters, target=10, slope=0.2)


@register("sentence_length_5_smooth")
def sentence_length_5_smooth(ids, delimiters) -> float:
    """Like sentence_length_10_smooth with 5 tokens as the ideal length."""
    return _sentence_length_smooth(ids, delimiters, target=5, slope=0.2)


def get_reward(name: str) -> RewardFn:
    try:
        return REWARDS[name]
    except KeyError:
        from ..errors import LorasweepError

        raise LorasweepError(
            f"unknown reward {name!r}; known rewards: {', '.join(sorted(REWARDS))}"
        ) from None


# ---- a reward of the user's own: a Python file and a function in it ----------------------------
#
# ``training.reward: path/to/file.py:function``, the function taking the prompts and the
# completions as text, (prompts: list[str], completions: list[str]) -> list[float], TRL's
# convention for reward functions. The path is relative to the workflow's folder. Its
# content's hash enters every cell's specification, so editing the file reruns the cells.

REWARD_FILE = re.compile(r"^(?P<path>[^:]+\.py):(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")


def reward_file(name: str):
    """(path, function) of a reward given as ``file.py:function``; None for a registered name."""
    match = REWARD_FILE.match(str(name))
    return (match.group("path"), match.group("function")) if match else None


def check_reward(name: str, root=".") -> str:
    """A registered name, or a file that exists and defines the function; returns the file's SHA-256 ('' for a name).

    Raises LorasweepError in one line naming what is wrong. The file is read, not run:
    the function is found by its ``def`` (or an assignment) at the file's top level.
    """
    from ..errors import LorasweepError

    spec = reward_file(name)
    if spec is None:
        if name not in REWARDS:
            raise LorasweepError(
                f"config key 'training.reward': value {name!r} is not allowed; expected one of "
                f"{', '.join(sorted(REWARDS))}, or path/to/file.py:function"
            )
        return ""
    path, function = spec
    file = Path(root) / path
    if not file.is_file():
        raise LorasweepError(f"config key 'training.reward': the reward file {path} does not exist "
                             f"(looked for {file.resolve()})")
    source = file.read_bytes()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as error:
        raise LorasweepError(f"config key 'training.reward': the reward file {path} is not valid Python "
                             f"(line {error.lineno}: {error.msg})") from None
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {target.id for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)}
    if function not in defined:
        nearest = sorted(n for n in defined if not n.startswith("_"))
        raise LorasweepError(f"config key 'training.reward': {path} defines no function {function!r}"
                             + (f"; it defines {', '.join(nearest)}" if nearest else ""))
    return hashlib.sha256(source).hexdigest()


def load_reward_file(path: str, function: str, root="."):
    """The user's reward function, its module imported from the file under a name of its own."""
    from ..errors import LorasweepError

    file = Path(root) / path
    module_spec = importlib.util.spec_from_file_location(f"lorasweep_reward_{Path(path).stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - the user's file: any error is theirs, named
        raise LorasweepError(f"reward {path}:{function}: importing the file raised "
                             f"{type(error).__name__}: {error}") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise LorasweepError(f"reward {path}:{function}: {function} is not a function")
    return fn


def check_text_rewards(values, count: int, where: str) -> list:
    """The user's reward values as floats, or LorasweepError naming ``where`` (file, function, step)."""
    import math

    from ..errors import LorasweepError

    if not isinstance(values, (list, tuple)) and not hasattr(values, "tolist"):
        raise LorasweepError(f"{where}: returned {type(values).__name__}, expected a list of {count} floats")
    values = list(values.tolist() if hasattr(values, "tolist") else values)
    if len(values) != count:
        raise LorasweepError(f"{where}: returned {len(values)} values for {count} completions")
    out = []
    for i, value in enumerate(values):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise LorasweepError(f"{where}: value {i} is {values[i]!r}, not a number") from None
        if not math.isfinite(value):
            raise LorasweepError(f"{where}: value {i} is {value}, not a finite number")
        out.append(value)
    return out
