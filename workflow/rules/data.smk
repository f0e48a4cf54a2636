# Generated data (tokenizer + token datasets) and the tracking database.


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
