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


rule report_refine_curves:
    input:
        all_trained_runs(),
    output:
        report(
            f"{RESULTS}/figures/refine_curves.png",
            category="Figures",
            caption="../report/refine_curves.rst",
        ),
    log:
        f"{RESULTS}/logs/report/refine_curves.log",
    localrule: True
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
    shell:
        "refine report refine_curves --config {params.config:q} --out {output:q} {input:q} > {log:q} 2>&1"


rule report_differences:
    input:
        [path for suite in SUITE_REGISTRY for path in eval_outputs(suite)],
    output:
        table=report(f"{RESULTS}/differences_table.csv", category="Tables", caption="../report/differences_table.rst"),
        forest=report(
            f"{RESULTS}/figures/differences_forest.png",
            category="Figures",
            caption="../report/differences_forest.rst",
        ),
    log:
        f"{RESULTS}/logs/report/differences.log",
    localrule: True
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
    shell:
        "refine report differences --config {params.config:q} --out {output.table:q} --out {output.forest:q}"
        " {input:q} > {log:q} 2>&1"


# One report rule per suite of the registry: report_niah, report_qa, report_longbench, ...
for _suite in SUITE_REGISTRY:

    rule:
        name:
            f"report_{_suite}"
        input:
            eval_outputs(_suite),
        output:
            **suite_report_outputs(_suite),
        log:
            f"{RESULTS}/logs/report/{_suite}.log",
        localrule: True
        conda:
            "../envs/refine.yaml"
        params:
            **suite_report_params(_suite),
        shell:
            suite_report_command(_suite)


rule bench:
    output:
        csv=f"{RESULTS}/bench/update_cost.csv",
        figure=f"{RESULTS}/bench/bench.png",
        table=f"{RESULTS}/bench/bench.md",
    log:
        f"{RESULTS}/logs/bench.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        bench=config.get("bench", {}),  # the sizes (refine.bench.BenchConfig): a change reruns the job
    shell:
        "refine bench --config {params.config:q} --out {output.csv:q} > {log:q} 2>&1"
        " && refine report bench --out {output.figure:q} --out {output.table:q} {output.csv:q} >> {log:q} 2>&1"
