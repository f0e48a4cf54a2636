# Generated data (tokenizer, then one job per token dataset), evaluation items (one job per
# part, so a NIAH edit does not redo the QA training items), and the tracking database.


rule tokenizer:
    input:
        tokenizer_sources,
    output:
        directory(f"{RESULTS}/data/tokenizer"),
    log:
        f"{RESULTS}/logs/data/tokenizer.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        out=subpath(output[0], parent=True),
        trigger=trigger("tokenizer"),
    shell:
        "refine data --config {params.config:q} --out {params.out:q} --only tokenizer > {log:q} 2>&1"


rule data_split:
    input:
        tokenizer=rules.tokenizer.output,
        sources=data_split_sources,
    output:
        tokens=f"{RESULTS}/data/{{split}}.npy",
        meta=f"{RESULTS}/data/{{split}}.json",
    log:
        f"{RESULTS}/logs/data/{{split}}.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        out=subpath(output.tokens, parent=True),
        trigger=trigger("data_split"),
    shell:
        "refine data --config {params.config:q} --out {params.out:q} --only {wildcards.split:q} > {log:q} 2>&1"


rule eval_data_niah:
    input:
        tokenizer=rules.tokenizer.output,
        sources=essay_sources,
    output:
        f"{RESULTS}/data/eval/niah.jsonl",
    log:
        f"{RESULTS}/logs/data/eval_niah.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        out=subpath(output[0], parent=True),
        trigger=trigger("eval_data_niah"),
    shell:
        "refine eval-data --config {params.config:q} --out {params.out:q} --only niah > {log:q} 2>&1"


rule eval_data_qa_test:
    input:
        tokenizer=rules.tokenizer.output,
        sources=qa_sources,
    output:
        f"{RESULTS}/data/eval/qa_test.jsonl",
    log:
        f"{RESULTS}/logs/data/eval_qa_test.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        out=subpath(output[0], parent=True),
        trigger=trigger("eval_data_qa_test"),
    shell:
        "refine eval-data --config {params.config:q} --out {params.out:q} --only qa_test > {log:q} 2>&1"


rule eval_data_qa_train:
    input:
        tokenizer=rules.tokenizer.output,
        sources=qa_sources,
    output:
        f"{RESULTS}/data/eval/qa_train.jsonl",
    log:
        f"{RESULTS}/logs/data/eval_qa_train.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        out=subpath(output[0], parent=True),
        trigger=trigger("eval_data_qa_train"),
    shell:
        "refine eval-data --config {params.config:q} --out {params.out:q} --only qa_train > {log:q} 2>&1"


rule eval_data_longbench:
    input:
        tokenizer=rules.tokenizer.output,
    output:
        f"{RESULTS}/data/eval/longbench.summary.json",
    log:
        f"{RESULTS}/logs/data/eval_longbench.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        out=subpath(output[0], parent=True),
        trigger=trigger("eval_data_longbench"),
    shell:
        "refine eval-data --config {params.config:q} --out {params.out:q} --only longbench > {log:q} 2>&1"


rule tracking:
    output:
        f"{RESULTS}/tracking.ready",
    log:
        f"{RESULTS}/logs/tracking.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        trigger=trigger("tracking"),
    shell:
        "refine tracking --config {params.config:q} --marker {output:q} > {log:q} 2>&1"
