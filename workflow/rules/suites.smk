# The workflow side of the suite registry (refine.eval.suites, imported as SUITE_REGISTRY in common.smk):
# the inputs and outputs of the evaluation job, and each suite's report rule (outputs, captions, command).

import shlex


def eval_run_inputs():
    """The model, the held-out tokens, and every suite's data (named by suite)."""
    suites = {suite: suite_data(suite) for suite in SUITE_REGISTRY}
    return {"model": trained} | suites | {"heldout": f"{RESULTS}/data/heldout.npy", "tracking": rules.tracking.output}


def eval_run_outputs():
    """The held-out NTP file first (eval_root reads the first output), then one scores.json per suite."""
    outputs = {"ntp": f"{RESULTS}/eval/ntp/{{model}}/{{run}}.json"}
    return outputs | {
        suite: f"{RESULTS}/eval/{suite}/{{model}}/{{run}}/ttt-none/scores.json" for suite in SUITE_REGISTRY
    }


def suite_report_params(suite):
    """A suite's report params: the resolved config, the captions of its outputs (workflow/report/
    suite_<key>.rst shows them) and, where READS lists the rule, its rerun trigger."""
    params = {"config": RESOLVED, "captions": {out.key: out.caption for out in SUITE_REGISTRY[suite].outputs},
              "suite": suite, "outs": report_out_args}  # fmt: skip
    if f"report_{suite}" in READS:
        params["trigger"] = trigger(f"report_{suite}")
    return params


def suite_report_outputs(suite):
    """The suite's report outputs (refine.eval.suites), named by key, marked for `--report`."""
    return {
        out.key: report(f"{RESULTS}/{out.path}", category=out.category, caption=f"../report/suite_{out.key}.rst")
        for out in SUITE_REGISTRY[suite].outputs
    }


def report_out_args(wildcards, output):
    """`--out <path>` for each output, in the suite's order (the order `refine report` reads them in)."""
    return " ".join(f"--out {shlex.quote(path)}" for path in output)


def suite_report_command(suite):
    """The same command for every suite: Snakemake evaluates a rule's `shell:` again when its job runs,
    when the loop variable of the report rules holds the last suite (every report ran `refine report
    longbench`), so everything suite-specific comes from the params."""
    return "refine report {params.suite} --config {params.config:q} {params.outs} {input:q} > {log:q} 2>&1"
