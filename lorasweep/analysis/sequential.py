"""Seeds where the answer is still open: the decision between the rounds of a sequential study.

With ``lr_scaling.n: {initial, block, max}`` a cell's seeds come in blocks, each block
one job. Round 0 runs every cell's initial block. After each round, the verdicts of
every claim (``recommend.recommend_verdicts``) are taken on the seeds so far; a claim
resolved at this look is settled and keeps the verdict of that look, and the cells of
the claims still open get one more block, up to ``max`` seeds (docs/numbers.md,
"Sequential seeds").

The error rate of the whole procedure is controlled for the repeated looks by a fixed
(Bonferroni) correction: with K planned looks (the rounds plus the last reading), each
look resolves at p <= alpha / K. Whatever the looks' dependence, the chance that a claim
with no true difference behind it is ever called resolved is at most K x alpha / K = alpha
(tests/test_sequential.py shows it by simulation).
"""

import json
from pathlib import Path

from .. import atomic
from . import inference, recommend
from ..study import grid


def looks(lr_cfg: dict) -> int:
    """The planned looks of a sequential study: one after each round, the last one the final tables'."""
    return grid.rounds(lr_cfg) + 1


def alpha_per_look(lr_cfg: dict) -> float:
    return inference.ALPHA / looks(lr_cfg) if grid.is_sequential(lr_cfg) else inference.ALPHA


def claim_id(rank, claim: dict) -> str:
    return f"rank {rank}: {claim['claim']}"


def decide(rows: list, lr_cfg: dict, round_: int, previous: dict = None) -> dict:
    """The decision after round ``round_ - 1``'s blocks: which cells get block ``round_``, and why the others stop.

    ``rows`` are the lr-scaling table rows of every cell on its seeds so far
    (``tables.lr_scaling_rows``); ``previous`` the decision of the round before
    (settled claims carry over, their verdict frozen at the look that settled them).
    """
    plan = grid.seed_plan(lr_cfg)
    alpha = alpha_per_look(lr_cfg)
    previous = previous or {"settled": {}, "stopped": {}}
    settled = dict(previous["settled"])
    open_cells, claimed_cells, all_cells = set(), set(), {}
    for row in rows:
        all_cells[_label(recommend.cell_key(row))] = int(row["n"])
    for verdict in recommend.recommend_verdicts(rows, alpha=alpha):
        for claim in verdict["claims"]:
            claimed_cells |= {_label(cell) for cell in claim["cells"]}
            cid = claim_id(verdict["rank"], claim)
            if cid in settled:
                continue
            if claim["resolved"]:
                settled[cid] = {**claim, "rank": verdict["rank"], "look": round_, "looks": looks(lr_cfg)}
            else:
                open_cells |= {_label(cell) for cell in claim["cells"]}
    stopped = dict(previous["stopped"])
    continuing = []
    for label, n in sorted(all_cells.items()):
        if label in stopped:
            continue
        if label not in claimed_cells:  # e.g. a middle batch size: it stands in no claim, so no look extends it
            stopped[label] = f"stopped: in no claim (n = {n})"
        elif label not in open_cells:
            stopped[label] = f"stopped: its comparisons resolved at n = {n}"
        elif n + plan["block"] > plan["max"]:
            stopped[label] = f"stopped: max reached (n = {n})"
        else:
            continuing.append(label)
    return {"round": round_, "looks": looks(lr_cfg), "alpha_per_look": alpha, "plan": plan,
            "seeds": all_cells, "continue": continuing, "settled": settled, "stopped": stopped}


def final_state(rows: list, lr_cfg: dict, last: dict = None) -> dict:
    """The last look: the final tables' verdicts, and every cell's reason for its seed count."""
    state = decide(rows, lr_cfg, looks(lr_cfg), last)
    for label in state["continue"]:  # no round after the last: a cell still open has had its max
        state["stopped"][label] = f"stopped: max reached (n = {state['seeds'][label]})"
    state["continue"] = []
    return state


def final_verdicts(rows: list, lr_cfg: dict, state: dict) -> list:
    """The verdicts a sequential study reports: settled claims as their look gave them, the rest at the last look."""
    alpha = alpha_per_look(lr_cfg)
    verdicts = recommend.recommend_verdicts(rows, alpha=alpha)
    for verdict in verdicts:
        verdict["claims"] = [state["settled"].get(claim_id(verdict["rank"], claim),
                                                  {**claim, "look": looks(lr_cfg), "looks": looks(lr_cfg)})
                             for claim in verdict["claims"]]
    return verdicts


def sequential_rule(lr_cfg: dict) -> str:
    plan = grid.seed_plan(lr_cfg)
    k = looks(lr_cfg)
    return (f"sequential seeds: {plan['initial']} per cell first, then {plan['block']} more per round for the cells "
            f"of claims still open, up to {plan['max']}; {k} planned looks, each resolving at p <= "
            f"{inference.ALPHA:.2f} / {k} = {alpha_per_look(lr_cfg):.3g} (Bonferroni), so a claim with no true "
            f"difference is called resolved at most {inference.ALPHA:.0%} of the time over all looks; a claim "
            "keeps the verdict of the look that resolved it")


def _label(cell: list) -> str:
    return grid.cell_label(*cell)


def label_of(row: dict) -> str:
    return _label(recommend.cell_key(row))


def read_state(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8")) if path and Path(path).exists() else None
