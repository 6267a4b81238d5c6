"""Snakemake script of rule study_config: the resolved config as the tables and archive see it."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 (snakemake is injected)

from lorasweep.atomic import write_json  # noqa: E402

study = snakemake.params.study  # noqa: F821
write_json(snakemake.output[0], study)  # noqa: F821
with open(snakemake.log[0], "w", encoding="utf-8") as handle:  # noqa: F821
    handle.write(f"wrote {snakemake.output[0]} (scale {study['scale']})\n")  # noqa: F821
