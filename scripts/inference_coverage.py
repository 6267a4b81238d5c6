#!/usr/bin/env python3
"""The error rates of the verdicts and intervals, measured on synthetic cells: the table docs/design.md quotes.

    .venv/bin/python scripts/inference_coverage.py [--replicates 8000] [--seeds 2 3 4 6 8]

For each seed count: one cell's t-interval coverage per synthetic cell, the
difference's and the speedup's interval coverage and the share resolved per pair
with a true difference, the share wrongly resolved with none (one distribution), and
with equal means but different spreads. The cells are ``lorasweep.analysis.coverage``'s.
"""

import argparse
import sys

import numpy as np

from lorasweep.analysis import coverage, inference


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=8000)
    p.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    args = p.parse_args()
    rng = np.random.default_rng(20261203)
    print("synthetic cells (median, sigma of log-normal steps to target, capped at 300):")
    for name, (median, sigma) in coverage.CELLS.items():
        print(f"  {name}: {median}, {sigma} (censored {coverage.censored_share(median, sigma):.0%})")
    unequal = coverage.equal_means_pair()
    print(f"  equal means, other spreads: {unequal[0]} and ({unequal[1][0]:.1f}, {unequal[1][1]})\n")
    print("| seeds | t-interval coverage (" + ", ".join(coverage.CELLS) + ") | difference / ratio coverage, resolved ("
          + ", ".join(coverage.PAIRS) + ") | false resolved: one distribution (" + ", ".join(coverage.CELLS)
          + ") | false resolved: equal means, other spreads |")
    print("|---|---|---|---|---|")
    for n in args.seeds:
        one = [coverage.one_cell_coverage(rng, name, n, args.replicates) for name in coverage.CELLS]
        pairs = [coverage.pair_coverage(rng, name, n, args.replicates) for name in coverage.PAIRS]
        null = [coverage.false_resolution(rng, name, n, args.replicates) for name in coverage.CELLS]
        x, y = coverage.pair_samples(rng, *unequal, n, args.replicates)
        shape = float(np.mean(inference.permutation_p_value(x, y) <= inference.ALPHA))
        print(f"| {n} | {' / '.join(f'{c:.3f}' for c in one)} | "
              + " · ".join(f"{r['difference']:.3f} / {r['ratio']:.3f}, {r['resolved']:.2f}" for r in pairs)
              + f" | {' / '.join(f'{v:.3f}' for v in null)} | {shape:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
