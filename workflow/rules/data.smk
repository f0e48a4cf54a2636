# Generated data (tokenizer + token datasets), evaluation items, and the tracking database.


rule data:
    output:
        tokenizer=directory(f"{RESULTS}/data/tokenizer"),
        pretrain=f"{RESULTS}/data/pretrain.npy",
        midtrain=f"{RESULTS}/data/midtrain.npy",
        heldout=f"{RESULTS}/data/heldout.npy",
    log:
        f"{RESULTS}/logs/data.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        out=subpath(output.pretrain, parent=True),
        trigger=section_hash("data"),
    shell:
        "refine data --config {params.config} --out {params.out} > {log} 2>&1"


rule eval_data:
    input:
        rules.data.output.tokenizer,
    output:
        f"{RESULTS}/data/eval/summary.json",
    log:
        f"{RESULTS}/logs/eval_data.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        out=subpath(output[0], parent=True),
        trigger=section_hash("eval"),
    shell:
        "refine eval-data --config {params.config} --out {params.out} > {log} 2>&1"


rule tracking:
    output:
        f"{RESULTS}/tracking.ready",
    log:
        f"{RESULTS}/logs/tracking.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
    shell:
        "refine tracking --config {params.config} --marker {output} > {log} 2>&1"
