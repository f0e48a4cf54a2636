# Pretraining of the tiny base models, mid-training (SFT, compute-matched SFT, REFINE) and
# post-training on the REFINE-mid model (SFT, Nested SFT, Nested REFINE).


rule pretrain:
    input:
        data=pretrain_data,
        tokenizer=rules.tokenizer.output,
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
        launch=TRAIN,
        out=subpath(output[0], parent=True),
        trigger=trigger("pretrain"),
    shell:
        "{params.launch} train --config {params.config:q} --stage pretrain --model {wildcards.model:q}"
        " --out {params.out:q} > {log:q} 2>&1"


rule midtrain:
    input:
        data=f"{RESULTS}/data/midtrain.npy",
        base=rules.pretrain.output,
        tracking=rules.tracking.output,
    output:
        f"{RESULTS}/models/{{model}}/mid-{{midmethod}}-s{{seed}}/final_metrics.json",
    log:
        f"{RESULTS}/logs/midtrain/{{model}}-{{midmethod}}-s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/midtrain/{{model}}-{{midmethod}}-s{{seed}}.tsv"
    conda:
        "../envs/refine.yaml"
    resources:
        gpu=GPU_PER_JOB,
    params:
        config=RESOLVED,
        launch=TRAIN,
        init=f"{RESULTS}/models/{{model}}/base/model",
        out=subpath(output[0], parent=True),
        trigger=trigger("midtrain"),
    shell:
        "{params.launch} train --config {params.config:q} --stage midtrain --method {wildcards.midmethod:q}"
        " --model {wildcards.model:q} --seed {wildcards.seed:q} --init {params.init:q} --out {params.out:q}"
        " > {log:q} 2>&1"


rule posttrain:
    input:
        data=rules.eval_data_qa_train.output,
        mid=f"{RESULTS}/models/{{model}}/mid-refine-s{{seed}}/final_metrics.json",
        tracking=rules.tracking.output,
    output:
        f"{RESULTS}/models/{{model}}/post-{{postmethod}}-s{{seed}}/final_metrics.json",
    log:
        f"{RESULTS}/logs/posttrain/{{model}}-{{postmethod}}-s{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/posttrain/{{model}}-{{postmethod}}-s{{seed}}.tsv"
    conda:
        "../envs/refine.yaml"
    resources:
        gpu=GPU_PER_JOB,
    params:
        config=RESOLVED,
        launch=TRAIN,
        init=f"{RESULTS}/models/{{model}}/mid-refine-s{{seed}}/model",
        out=subpath(output[0], parent=True),
        trigger=trigger("posttrain"),
    shell:
        "{params.launch} train --config {params.config:q} --stage posttrain --method {wildcards.postmethod:q}"
        " --model {wildcards.model:q} --seed {wildcards.seed:q} --init {params.init:q} --out {params.out:q}"
        " > {log:q} 2>&1"
