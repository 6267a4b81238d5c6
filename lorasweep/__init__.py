"""lorasweep: LoRA fine-tuning throughput studies on tiny language models.

The package holds the logic; the Snakemake workflow (Snakefile, rules/) only plans
jobs and calls the command-line entry points in ``lorasweep.__main__``.
"""

__version__ = "0.1.0"
