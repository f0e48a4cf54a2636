# Evaluation: held-out validation loss and next-token accuracy.


rule eval_ntp:
    input:
        model=ntp_eval_input,
        data=rules.data.output.heldout,
    output:
        f"{RESULTS}/eval/ntp/{{model}}/{{run}}.json",
    log:
        f"{RESULTS}/logs/eval_ntp/{{model}}-{{run}}.log",
    conda:
        "../envs/refine.yaml"
    params:
        config=RESOLVED,
        model_dir=f"{RESULTS}/models/{{model}}/{{run}}/model",
    shell:
        "refine eval ntp --config {params.config} --model-dir {params.model_dir}"
        " --data {input.data} --out {output} > {log} 2>&1"
