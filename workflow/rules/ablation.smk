# The fast-weight ablation (refine.eval.ablation): every LaCT base model of the study on RULER NIAH
# with its fast-weight updates on and off, one table. Included by the Snakefile; ABLATION_TARGETS
# is empty when the study has no LaCT model.

from refine.eval.suites.niah import NIAH_GROUPS

ABLATION_MODELS = [m for m in MODELS if config["models"][m]["arch"] == "lact"]
# the single-needle variants (the check reads S: issue 16), all the study's if it has none
_NIAH_VARIANTS = config["eval"]["niah"]["variants"]
ABLATION_VARIANTS = [v for v in _NIAH_VARIANTS if v in NIAH_GROUPS["S"]] or _NIAH_VARIANTS
ABLATION_TARGETS = [f"{RESULTS}/ablation_table.csv"] if ABLATION_MODELS else []
# what the job reads beyond its input files: a change reruns it (as `trigger` does for READS)
ABLATION_READS = RUNTIME + ["eval.batch_size", "eval.niah"]


rule ablation:
    input:
        models=expand(f"{RESULTS}/models/{{model}}/base/final_metrics.json", model=ABLATION_MODELS),
        data=suite_data("niah"),
    output:
        table=report(f"{RESULTS}/ablation_table.csv", category="Tables", caption="../report/ablation_table.rst"),
        records=expand(f"{RESULTS}/ablation/{{model}}-base.json", model=ABLATION_MODELS),
    log:
        f"{RESULTS}/logs/report/ablation.log",
    benchmark:
        f"{RESULTS}/benchmarks/ablation.tsv"
    conda:
        "../envs/refine.yaml"
    resources:
        gpu=GPU_PER_JOB,
    params:
        config=RESOLVED,
        variants=ABLATION_VARIANTS,
        model_dirs=expand(f"{RESULTS}/models/{{model}}/base/model", model=ABLATION_MODELS),
        json_dir=subpath(output[1], parent=True),
        trigger=config_hash({key: lookup_key(config, key) for key in ABLATION_READS}),
    shell:
        "refine ablation --config {params.config:q} --model-dir {params.model_dirs:q}"
        " --variants {params.variants:q} --json-dir {params.json_dir:q} --out {output.table:q} > {log:q} 2>&1"
