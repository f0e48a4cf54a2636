# Pretraining of the tiny base models and mid-training (NTP-SFT).


rule pretrain:
    input:
        data=rules.data.output.pretrain,
        tracking=rules.tracking.output,
    output:
        f"{RESULTS}/models/{{model}}/base/final_metrics.json",
    log:
        f"{RESULTS}/logs/pretrain/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{model}}.tsv"
    conda:
        "../envs/refine.yaml"
    resources:
        gpu=GPU_PER_JOB,
    params:
        config=RESOLVED,
        out=subpath(output[0], parent=True),
        trigger=section_hash("pretrain"),
    shell:
        "refine train --config {params.config} --stage pretrain --model {wildcards.model}"
        " --out {params.out} > {log} 2>&1"


rule midtrain_sft:
    input:
        data=rules.data.output.midtrain,
        base=rules.pretrain.output,
        tracking=rules.tracking.output,
    output:
        f"{RESULTS}/models/{{model}}/mid-sft-s{{seed}}/final_metrics.json",
    log:
        f"{RESULTS}/logs/midtrain/{{model}}-sft-s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/midtrain/{{model}}-sft-s{{seed}}.tsv"
    conda:
        "../envs/refine.yaml"
    resources:
        gpu=GPU_PER_JOB,
    params:
        config=RESOLVED,
        init=f"{RESULTS}/models/{{model}}/base/model",
        out=subpath(output[0], parent=True),
        trigger=section_hash("midtrain", "sft"),
    shell:
        "refine train --config {params.config} --stage midtrain --method sft --model {wildcards.model}"
        " --seed {wildcards.seed} --init {params.init} --out {params.out} > {log} 2>&1"
