# Tables and figures from the files the runs wrote.


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
    log:
        f"{RESULTS}/logs/report_ntp.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
    shell:
        "refine report ntp --config {params.config} --table {output.table}"
        " --figure {output.figure} {input} > {log} 2>&1"
