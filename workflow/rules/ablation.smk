# The fast-weight ablation (refine.eval.ablation): every LaCT base model of the study on RULER NIAH
# with its fast-weight updates on and off, one table. Included by the Snakefile; ABLATION_TARGETS
# is empty when the study has no LaCT model.

ABLATION_MODELS = [m for m in MODELS if config["models"][m]["arch"] == "lact"]
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
        model_dirs=expand(f"{RESULTS}/models/{{model}}/base/model", model=ABLATION_MODELS),
        json_dir=subpath(output[1], parent=True),
        trigger=config_hash({key: lookup_key(config, key) for key in ABLATION_READS}),
    shell:
        "python -m refine.eval.ablation --config {params.config:q} --model-dir {params.model_dirs:q}"
        " --json-dir {params.json_dir:q} --out {output.table:q} > {log:q} 2>&1"
