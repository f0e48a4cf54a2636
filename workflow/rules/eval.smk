# Evaluation of every trained run on every suite (held-out NTP, RULER NIAH, RULER QA, LongBench)
# in one job, and test-time training evaluations (one job per suite and TTT mode).


rule eval_run:
    input:
        model=trained,
        data=rules.eval_data.output,
        heldout=f"{RESULTS}/data/heldout.npy",
        tracking=rules.tracking.output,
    output:
        ntp=f"{RESULTS}/eval/ntp/{{model}}/{{run}}.json",
        niah=f"{RESULTS}/eval/niah/{{model}}/{{run}}/ttt-none/scores.json",
        qa=f"{RESULTS}/eval/qa/{{model}}/{{run}}/ttt-none/scores.json",
        longbench=f"{RESULTS}/eval/longbench/{{model}}/{{run}}/ttt-none/scores.json",
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
    shell:
        "refine eval ntp,niah,qa,longbench --config {params.config} --model-dir {params.model_dir}"
        " --out-root {params.out_root} --seed {params.seed} > {log} 2>&1"


rule eval_ttt:
    input:
        model=trained,
        data=rules.eval_data.output,
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
    shell:
        "refine eval {wildcards.suite} --config {params.config} --model-dir {params.model_dir}"
        " --out-root {params.out_root} --ttt sft,refine --seed {params.seed} > {log} 2>&1"
