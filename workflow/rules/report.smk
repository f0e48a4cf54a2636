# Tables and figures from the files the runs wrote.


def ntp_runs():
    runs = []
    for model in MODELS:
        runs.append(f"{RESULTS}/eval/ntp/{model}/base.json")
        runs += [f"{RESULTS}/eval/ntp/{model}/mid-sft-s{seed}.json" for seed in SEEDS]
    return runs


rule report_ntp:
    input:
        ntp_runs(),
    output:
        table=report(f"{RESULTS}/ntp_table.csv", category="Tables", caption="../report/ntp_table.rst"),
        figure=report(
            f"{RESULTS}/figures/training_curves.png",
            category="Figures",
            caption="../report/training_curves.rst",
        ),
    params:
        config=RESOLVED,
    log:
        f"{RESULTS}/logs/report_ntp.log",
    conda:
        "../envs/refine.yaml"
    shell:
        "refine report ntp --config {params.config} --table {output.table}"
        " --figure {output.figure} {input} > {log} 2>&1"
