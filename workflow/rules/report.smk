# Tables and figures from the files the runs wrote (all marked for `snakemake --report`).


rule report_ntp:
    input:
        ntp_runs(),
    output:
        report(f"{RESULTS}/ntp_table.csv", category="Tables", caption="../report/ntp_table.rst"),
    log:
        f"{RESULTS}/logs/report/ntp.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
    shell:
        "refine report ntp --config {params.config:q} --out {output:q} {input:q} > {log:q} 2>&1"


rule report_curves:
    input:
        all_trained_runs(),
    output:
        report(
            f"{RESULTS}/figures/training_curves.png",
            category="Figures",
            caption="../report/training_curves.rst",
        ),
    log:
        f"{RESULTS}/logs/report/curves.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
    shell:
        "refine report curves --config {params.config:q} --out {output:q} {input:q} > {log:q} 2>&1"


rule report_niah:
    input:
        eval_outputs("niah"),
    output:
        table=report(f"{RESULTS}/niah_table.csv", category="Tables", caption="../report/niah_table.rst"),
        heatmaps=report(
            f"{RESULTS}/figures/niah_heatmaps.png", category="Figures", caption="../report/niah_heatmaps.rst"
        ),
        bars=report(f"{RESULTS}/figures/niah_bars.png", category="Figures", caption="../report/niah_bars.rst"),
    log:
        f"{RESULTS}/logs/report/niah.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
    shell:
        "refine report niah --config {params.config:q} --out {output.table:q} --out {output.heatmaps:q}"
        " --out {output.bars:q} {input:q} > {log:q} 2>&1"


rule report_qa:
    input:
        eval_outputs("qa"),
    output:
        table=report(f"{RESULTS}/qa_table.csv", category="Tables", caption="../report/qa_table.rst"),
        bars=report(f"{RESULTS}/figures/qa_bars.png", category="Figures", caption="../report/qa_bars.rst"),
    log:
        f"{RESULTS}/logs/report/qa.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
    shell:
        "refine report qa --config {params.config:q} --out {output.table:q} --out {output.bars:q} {input:q} > {log:q} 2>&1"


rule report_longbench:
    input:
        eval_outputs("longbench"),
    output:
        table=report(f"{RESULTS}/longbench_table.csv", category="Tables", caption="../report/longbench_table.rst"),
        bars=report(f"{RESULTS}/figures/longbench_bars.png", category="Figures", caption="../report/longbench_bars.rst"),
    log:
        f"{RESULTS}/logs/report/longbench.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        trigger=trigger("report_longbench"),
    shell:
        "refine report longbench --config {params.config:q} --out {output.table:q} --out {output.bars:q}"
        " {input:q} > {log:q} 2>&1"


rule bench:
    output:
        f"{RESULTS}/bench/update_cost.csv",
    log:
        f"{RESULTS}/logs/bench.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
    shell:
        "refine bench --config {params.config:q} --out {output:q} > {log:q} 2>&1"
