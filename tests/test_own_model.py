"""A study of one's own model, reward and prompts: the README's worked example, end to end through Snakemake.

A tiny GPT-2 folder built offline (scripts/make_tiny_model.py), the reward file and the
study config of examples/own_model/, the prompts file next to the model: the dry run plans
the generic engine, the run writes the tables, verdicts and report as for the default
study; a misspelt reward path, a missing function, a reward that raises or returns the
wrong count stop with one line naming the file, the function and, in a run, the step.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from lorasweep.definitions import rewards
from lorasweep.errors import LorasweepError
from workflow import ROOT, copy_workflow, snakemake

EXAMPLE = ROOT / "examples" / "own_model"


@pytest.fixture(scope="module")
def own_study(tmp_path_factory):
    """The worked example as a user would run it: a copy of the workflow, the model built, the study run."""
    workdir = copy_workflow(tmp_path_factory.mktemp("own_model"))
    shutil.copytree(EXAMPLE, workdir / "examples" / "own_model", ignore=shutil.ignore_patterns("base"))
    built = subprocess.run([sys.executable, "scripts/make_tiny_model.py", "--architecture", "gpt2", "--out",
                            "examples/own_model/base"], cwd=workdir, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(workdir)})  # the copy's own package
    assert built.returncode == 0, built.stderr
    dry = snakemake(workdir, "--configfile", "examples/own_model/study.yaml", "--dry-run")
    snakemake(workdir, "--configfile", "examples/own_model/study.yaml")
    return workdir, dry.stdout + dry.stderr


def test_the_dry_run_plans_the_generic_engine_for_a_gpt2(own_study):
    _, planned = own_study
    assert '"engine": "generic"' in planned and "local_base" in planned


def test_the_own_study_writes_the_tables_verdicts_and_report_as_the_default_does(own_study):
    workdir, _ = own_study
    results = workdir / "results"
    table = pd.read_csv(results / "tables/lr_scaling.csv")
    assert len(table) == 3 and set(table["n"]) == {4}
    md = (results / "tables/lr_scaling.md").read_text()
    assert "local model examples/own_model/base/model" in md and "engine: generic" in md
    assert "reward examples/own_model/reward.py:short_sentences" in md
    rec = (results / "tables/recommendations.md").read_text()
    verdicts = [line for line in rec.splitlines() if line.startswith("- **Verdict, rank 4**")]
    assert len(verdicts) == 5 and all("permutation test, 4 seeds per cell" in line for line in verdicts)
    info = json.loads((results / "base/base.json").read_text())
    assert info["source"] == "local" and info["model_type"] == "gpt2" and info["engine"] == "generic"
    assert info["prompt_source"].startswith("prompts file examples/own_model/base/prompts.txt")
    for summary in results.glob("cells/*/*/summary.json"):
        assert json.loads(summary.read_text())["engine"] == "generic"
    assert (results / "tables/front.html").exists() and (results / "base/samples.json").exists()
    # the rewards recorded are the file's: each seed's first batch mean is short_sentences of its completions
    assert (table["early_reward"] >= 0).all() and (table["early_reward"] <= 1).all()


def test_editing_the_reward_file_reruns_the_cells_and_nothing_else_of_the_base(own_study, tmp_path):
    workdir, _ = own_study
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy, symlinks=True)
    reward = copy / "examples/own_model/reward.py"
    reward.write_text(reward.read_text().replace("abs(len(words) - 6) / 6", "abs(len(words) - 5) / 5"))
    out = snakemake(copy, "--configfile", "examples/own_model/study.yaml", "--dry-run").stdout
    planned = set(re.findall(r"^(?:local)?rule (\w+):", out, flags=re.M))
    assert "cell" in planned and not planned & {"local_base", "prompts", "base_samples", "base_info"}
    # every cell reruns (the reward decides each run), and nothing of the base
    assert out.count("rule cell:") == 5


def test_a_misspelt_reward_path_gets_one_line(own_study, tmp_path):
    workdir, _ = own_study
    out = snakemake(workdir, "--configfile", "examples/own_model/study.yaml", "--dry-run", "--config",
                    "training={reward: examples/own_model/rewrad.py:short_sentences}", check=False)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "lorasweep: error" in line]
    assert out.returncode != 0 and len(lines) == 1
    assert "the reward file examples/own_model/rewrad.py does not exist" in lines[0]


def test_a_reward_file_without_the_function_names_what_it_defines(tmp_path):
    (tmp_path / "r.py").write_text("def brevity(prompts, completions):\n    return [0.0] * len(completions)\n")
    with pytest.raises(LorasweepError, match=r"r.py defines no function 'brevty'; it defines brevity"):
        rewards.check_reward("r.py:brevty", root=tmp_path)
    assert len(rewards.check_reward("r.py:brevity", root=tmp_path)) == 64  # its content's hash
    with pytest.raises(LorasweepError, match="value 'sentence_lenght_10_smooth' is not allowed"):
        rewards.check_reward("sentence_lenght_10_smooth")


@pytest.mark.parametrize("body, message", [
    ("raise ValueError('no')", "reward r.py:f raised at step 3: ValueError: no"),
    ("return [0.5]", "reward r.py:f at step 3: returned 1 values for 2 completions"),
    ("return [0.5, float('nan')]", "reward r.py:f at step 3: value 1 is nan, not a finite number"),
    ("return [0.5, 'x']", "reward r.py:f at step 3: value 1 is 'x', not a number"),
    ("return 0.5", "reward r.py:f at step 3: returned float, expected a list of 2 floats"),
])
def test_a_reward_that_misbehaves_stops_the_run_naming_file_function_and_step(tmp_path, monkeypatch, body, message):
    import torch

    from lorasweep.training.run import Scorer

    (tmp_path / "r.py").write_text(f"def f(prompts, completions):\n    {body}\n")
    monkeypatch.chdir(tmp_path)

    class Tokenizer:
        @staticmethod
        def batch_decode(rows):
            return [" ".join(map(str, row)) for row in rows]

    score = Scorer("r.py:f", Tokenizer(), frozenset())
    with pytest.raises(LorasweepError) as error:
        score(torch.tensor([[5, 6], [7, 8]]), [[1, 2], [3, 4]], [2, 1], step=3)
    assert str(error.value) == message


def test_a_reward_file_sees_decoded_prompts_and_completions_cut_at_their_stop(tmp_path, monkeypatch):
    import torch

    from lorasweep.training.run import Scorer

    (tmp_path / "r.py").write_text("SEEN = []\ndef f(prompts, completions):\n    SEEN.append((prompts, completions))\n"
                                   "    return [float(len(c)) for c in completions]\n")
    monkeypatch.chdir(tmp_path)

    class Tokenizer:
        @staticmethod
        def batch_decode(rows):
            return ["-".join(map(str, row)) for row in rows]

    score = Scorer("r.py:f", Tokenizer(), frozenset())
    values = score(torch.tensor([[5, 6], [7, 8]]), [[1, 2, 9], [3, 4, 9]], [2, 1], step=1)
    assert values.tolist() == [3.0, 1.0]  # "1-2" and "3": the completions before their stop


def test_prompts_files_in_both_forms(tmp_path):
    from lorasweep.base.prompts import read_prompts_file

    (tmp_path / "p.txt").write_text("once upon a time\n\nthe cat sat\n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "once upon a time"}\n{"prompt": "the cat sat", "id": 2}\n')
    assert read_prompts_file(tmp_path / "p.txt") == read_prompts_file(tmp_path / "p.jsonl") == \
        ["once upon a time", "the cat sat"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"text": "no prompt field"}\n')
    with pytest.raises(LorasweepError, match=r"bad.jsonl, line 2: expected an object with a \"prompt\" string"):
        read_prompts_file(tmp_path / "bad.jsonl")
