# Evaluation: held-out validation loss and next-token accuracy.


def ntp_eval_input(wildcards):
    return f"{RESULTS}/models/{wildcards.model}/{wildcards.run}/final_metrics.json"


rule eval_ntp:
    input:
        model=ntp_eval_input,
        data=rules.data.output.heldout,
    output:
        f"{RESULTS}/eval/ntp/{{model}}/{{run}}.json",
    params:
        config=RESOLVED,
        model_dir=f"{RESULTS}/models/{{model}}/{{run}}/model",
    log:
        f"{RESULTS}/logs/eval_ntp/{{model}}-{{run}}.log",
    conda:
        "../envs/refine.yaml"
    shell:
        "refine eval ntp --config {params.config} --model-dir {params.model_dir}"
        " --data {input.data} --out {output} > {log} 2>&1"
