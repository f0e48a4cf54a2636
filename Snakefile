# The REFINE study as a DAG. Every rule calls the `refine` command line; each stage also
# runs by hand with the same arguments (see README.md).


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/hooks.smk"


rule all:
    default_target: True
    input:
        final_targets(),
        ABLATION_TARGETS,
