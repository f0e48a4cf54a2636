# Evaluation of every trained run on every suite (held-out NTP and each suite of the registry,
# refine.eval.suites) in one job, and test-time training evaluations (one job per suite and TTT mode).


include: "suites.smk"


rule eval_run:
    input:
        **eval_run_inputs(),
    output:
        **eval_run_outputs(),
    log:
        f"{RESULTS}/logs/eval/{{model}}-{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{model}}-{{run}}.tsv"
    conda:
        "../envs/refine.yaml"
    resources:
        gpu=GPU_PER_JOB,
    params:
        config=RESOLVED,
        model_dir=f"{RESULTS}/models/{{model}}/{{run}}/model",
        out_root=eval_root,
        seed=run_seed,
        trigger=trigger("eval_run"),
    shell:
        f"refine eval ntp,{','.join(SUITE_REGISTRY)}"
        " --config {params.config:q} --model-dir {params.model_dir:q}"
        " --out-root {params.out_root:q} --seed {params.seed:q} > {log:q} 2>&1"


rule eval_ttt:
    input:
        model=trained,
        data=ttt_data,
        tracking=rules.tracking.output,
    output:
        sft=f"{RESULTS}/eval/{{suite}}/{{model}}/{{run}}/ttt-sft/scores.json",
        refine=f"{RESULTS}/eval/{{suite}}/{{model}}/{{run}}/ttt-refine/scores.json",
    log:
        f"{RESULTS}/logs/eval/{{suite}}-{{model}}-{{run}}-ttt.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{suite}}-{{model}}-{{run}}-ttt.tsv"
    conda:
        "../envs/refine.yaml"
    resources:
        gpu=GPU_PER_JOB,
    params:
        config=RESOLVED,
        model_dir=f"{RESULTS}/models/{{model}}/{{run}}/model",
        out_root=eval_root,
        seed=run_seed,
        trigger=trigger("eval_ttt"),
    shell:
        "refine eval {wildcards.suite:q} --config {params.config:q} --model-dir {params.model_dir:q}"
        " --out-root {params.out_root:q} --ttt sft,refine --seed {params.seed:q} > {log:q} 2>&1"
