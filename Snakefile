# lorasweep: LoRA GRPO throughput study as a Snakemake workflow.
# Everything the rules need is planned in rules/common.smk; the logic lives in lorasweep/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


# validates the config (schemas/config.schema.yaml and the rules a schema cannot say),
# applies the scale preset for this hardware and plans the cells
include: "rules/common.smk"
include: "rules/base.smk"
include: "rules/cells.smk"
include: "rules/sequential.smk"
include: "rules/aggregate.smk"
include: "rules/archive.smk"


rule all:
    input:
        final_outputs(),
        ARCHIVE,
    default_target: True
