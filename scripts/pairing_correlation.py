#!/usr/bin/env python3
"""Correlation of seed k's results between the two cells of each verdict claim, from finished tables.

    .venv/bin/python scripts/pairing_correlation.py results/tables/lr_scaling.csv [more tables ...]

For each claim (per rank: base vs largest batch size, control vs scaled at its batch
size) the Pearson correlation over seeds of the capped steps to target and of the
early reward, and the Fisher-z pooled correlation of all claims of all tables given
(for example the default study run with two seed sets). A paired analysis would help
only with a clearly positive correlation (docs/numbers.md, "Inference").
"""

import sys

import pandas as pd

from lorasweep.analysis import pairing


def main(paths) -> int:
    if not paths:
        sys.exit(__doc__)
    for statistic in ("steps", "early"):
        everything = []
        print(f"\n{statistic}:")
        for path in paths:
            rows = pd.read_csv(path).to_dict("records")
            correlations = pairing.seed_correlations(rows, statistic)
            everything += correlations
            for label, r, n in correlations:
                print(f"  {path}: {label}: r = {'—' if r is None else f'{r:+.2f}'} over {n} seeds")
        pooled = pairing.pooled_correlation(everything)
        if pooled:
            print(f"  pooled (Fisher z): r = {pooled[0]:+.2f} [95% CI {pooled[1]:+.2f}, {pooled[2]:+.2f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
