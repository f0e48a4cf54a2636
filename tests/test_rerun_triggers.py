"""Stale results: every job reruns when a config value or file it reads changes, and only then.

The smoke study is run once with a stand-in `refine` (tests/workflow_fakes.py: it only creates
the promised files, so Snakemake records real metadata in seconds); then each config section is
edited in turn and the jobs `snakemake -n` plans are compared with the jobs that read it, directly
or through a file that a replanned job rewrites.
"""

import re
from pathlib import Path

import pytest
import yaml
from workflow_fakes import copy_workflow, fake_refine_env, snakemake

MODELS = ("deltanet", "lact")
MID = ("sft", "sft_matched", "refine")
POST = ("sft", "nested_sft", "nested_refine")
RUNS = ["base"] + [f"mid-{m}-s0" for m in MID] + [f"post-{m}-s0" for m in POST]
REPORTS = {"report_ntp", "report_curves", "report_niah", "report_qa", "report_longbench", "report_refine_curves",
           "report_differences", "all"}  # fmt: skip


def job(rule: str, output: str) -> tuple[str, str]:
    return rule, output


def training(models=MODELS, pre=True, mid=MID, post=POST) -> set:
    jobs = set()
    for m in models:
        if pre:
            jobs.add(job("pretrain", f"models/{m}/base/final_metrics.json"))
        jobs |= {job("midtrain", f"models/{m}/mid-{x}-s0/final_metrics.json") for x in mid}
        jobs |= {job("posttrain", f"models/{m}/post-{x}-s0/final_metrics.json") for x in post}
    return jobs


def evals(models=MODELS, runs=RUNS) -> set:
    return {job("eval_run", f"eval/ntp/{m}/{r}.json") for m in models for r in runs}


def ttt(models=MODELS, suites=("qa", "longbench")) -> set:
    run = {"qa": "post-nested_refine-s0", "longbench": "mid-refine-s0"}
    return {job("eval_ttt", f"eval/{s}/{m}/{run[s]}/ttt-sft/scores.json") for m in models for s in suites}


def reports(*names) -> set:
    """The report jobs `names` and those reading the same files: the differences read every suite's
    evaluations, the REFINE curves the training runs the training curves read."""
    names = set(names) | ({"differences"} if {"niah", "qa", "longbench"} & set(names) else set())
    names |= {"refine_curves"} if "curves" in names else set()
    return {job(f"report_{n}", "") for n in names} | {job("all", "")}


EVAL_REPORTS = ("ntp", "niah", "qa", "longbench")
ALL_REPORTS = ("ntp", "curves", "niah", "qa", "longbench")
SPLITS = ("pretrain", "midtrain", "heldout")
DATA = {job("tokenizer", "data/tokenizer")} | {job("data_split", f"data/{s}.npy") for s in SPLITS}
EVAL_DATA = {job(f"eval_data_{p}", f"data/eval/{f}") for p, f in (("niah", "niah.jsonl"), ("qa_test", "qa_test.jsonl"),
             ("qa_train", "qa_train.jsonl"), ("longbench", "longbench.summary.json"))}  # fmt: skip
ABLATION = {job("ablation", "ablation_table.csv")}  # reads the LaCT base model, the NIAH items, eval.batch_size
EVERYTHING_BUT_TRACKING = DATA | EVAL_DATA | training() | evals() | ttt() | reports(*ALL_REPORTS) | ABLATION

# (edit merged over the smoke config, the jobs it must replan)
EDITS = {
    "corpus": ({"corpus": {"kind_weights": {"recall": 1.0, "prose": 0.5}}}, EVERYTHING_BUT_TRACKING),
    "tokenizer": ({"tokenizer": {"kind": "byte"}}, EVERYTHING_BUT_TRACKING),
    "models.deltanet": (
        {"models": {"deltanet": {"config": {"hidden_size": 32}}}},
        training(["deltanet"]) | evals(["deltanet"]) | ttt(["deltanet"]) | reports(*ALL_REPORTS),
    ),
    "data.midtrain": (
        {"data": {"midtrain": {"num_docs": 30}}},
        {job("data_split", "data/midtrain.npy")} | training(pre=False) | evals(runs=RUNS[1:]) | ttt()
        | reports(*ALL_REPORTS),
    ),
    "data.heldout": ({"data": {"heldout": {"num_docs": 12}}}, {job("data_split", "data/heldout.npy")} | evals()
                     | reports(*EVAL_REPORTS)),  # fmt: skip
    "pretrain": (
        {"pretrain": {"train": {"max_steps": 21}}},
        training() | evals() | ttt() | reports(*ALL_REPORTS) | ABLATION,
    ),
    "midtrain.sft": (
        {"midtrain": {"sft": {"train": {"max_steps": 5}}}},
        training(pre=False, mid=["sft"], post=[]) | evals(runs=["mid-sft-s0"]) | reports(*ALL_REPORTS),
    ),
    "posttrain.sft": (
        {"posttrain": {"sft": {"train": {"max_steps": 5}}}},
        training(pre=False, mid=[], post=["sft"]) | evals(runs=["post-sft-s0"])
        | reports("curves", "niah", "qa", "longbench"),
    ),
    "eval.niah": ({"eval": {"niah": {"samples": 3}}}, {job("eval_data_niah", "data/eval/niah.jsonl")} | evals()
                  | reports(*EVAL_REPORTS) | ABLATION),  # fmt: skip
    "eval.qa (test)": (
        {"eval": {"qa": {"samples": 4}}},
        {job("eval_data_qa_test", "data/eval/qa_test.jsonl")} | evals() | ttt(suites=["qa"]) | reports(*EVAL_REPORTS),
    ),
    "eval.qa (train)": (
        {"eval": {"qa": {"train_samples": 17}}},
        {job("eval_data_qa_train", "data/eval/qa_train.jsonl")} | training(pre=False, mid=[])
        | evals(runs=RUNS[4:]) | ttt(suites=["qa"]) | reports("curves", "niah", "qa", "longbench"),
    ),
    "eval.longbench (data)": (
        {"eval": {"longbench": {"records_per_task": 3}}},
        {job("eval_data_longbench", "data/eval/longbench.summary.json")} | evals() | ttt(suites=["longbench"])
        | reports(*EVAL_REPORTS),
    ),
    "eval.longbench (decoding)": (
        {"eval": {"longbench": {"max_new_tokens_cap": 5}}},
        evals() | ttt(suites=["longbench"]) | reports(*EVAL_REPORTS),
    ),
    "eval.ttt": ({"eval": {"ttt": {"lr": 2.0e-4}}}, ttt() | reports("qa", "longbench")),
    "eval.batch_size": ({"eval": {"batch_size": 4}}, evals() | ttt() | reports(*EVAL_REPORTS) | ABLATION),
    "data.pretrain": (
        {"data": {"pretrain": {"num_docs": 500}}},
        {job("data_split", "data/pretrain.npy")} | training() | evals() | ttt() | reports(*ALL_REPORTS) | ABLATION,
    ),
    "midtrain.refine": (
        {"midtrain": {"refine": {"refine": {"lambda_pg": 0.3}}}},
        training(pre=False, mid=["refine"]) | evals(runs=["mid-refine-s0", *RUNS[4:]]) | ttt()
        | reports(*ALL_REPORTS),
    ),
    "posttrain.max_answer_tokens": (
        {"posttrain": {"max_answer_tokens": 16}},
        training(pre=False, mid=[]) | evals(runs=RUNS[4:]) | ttt(suites=["qa"])
        | reports("curves", "niah", "qa", "longbench"),
    ),
    "eval.ntp": ({"eval": {"ntp": {"batch_size": 4}}}, evals() | reports(*EVAL_REPORTS)),
    "study": ({"study": "smoke2"}, {job("tracking", "tracking.ready")} | training() | evals() | ttt()
              | reports(*ALL_REPORTS) | ABLATION),  # fmt: skip
    "gpus_per_job (unused on a CPU)": ({"gpus_per_job": 4}, set()),
}


def planned(stdout: str, results: Path) -> set:
    """(rule, first output relative to the results folder; "" for the report rules) of every job
    in a dry run's listing."""
    jobs = set()
    for block in re.split(r"^(?=(?:local)?rule \w+:)", stdout, flags=re.M):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if not match:
            continue
        rule = match.group(1)
        out = re.search(r"^\s+output: ([^,\n]+)", block, re.M)
        path = "" if rule in REPORTS or out is None else str(Path(out.group(1)).relative_to(results))
        jobs.add(job(rule, path))
    return jobs


LONGBENCH_TASKS = ("hotpotqa", "samsum", "trec", "lcc")  # config/smoke.yaml's


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """The smoke study (LongBench read from a local folder) run to the end with the stand-in
    `refine`: (workflow copy, results, env, the configfile arguments, the LongBench folder)."""
    base = tmp_path_factory.mktemp("rerun")
    wf = copy_workflow(base / "wf")
    env = fake_refine_env(base / "bin")
    results = base / "results"
    longbench = base / "longbench"
    longbench.mkdir()
    for task in LONGBENCH_TASKS:
        (longbench / f"{task}.jsonl").write_text("{}\n")
    local = base / "local.yaml"
    local.write_text(yaml.safe_dump({"eval": {"longbench": {"source": str(longbench)}}}))
    files = ["config/smoke.yaml", str(local)]
    done = snakemake(["-j2", "all", "--configfile", *files, "--config", f"results_dir={results}"], wf, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    again = snakemake(["-n", "all", "--configfile", *files, "--config", f"results_dir={results}"], wf, env)
    assert again.returncode == 0 and planned(again.stdout, results) == set(), again.stdout[-3000:]
    return wf, results, env, files, longbench


def _plan(finished_study, *extra_files) -> set:
    wf, results, env, files, _ = finished_study
    args = ["-n", "all", "--configfile", *files, *map(str, extra_files), "--config", f"results_dir={results}"]
    done = snakemake(args, wf, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return planned(done.stdout, results)


@pytest.mark.slow
@pytest.mark.parametrize("section", list(EDITS))
def test_an_edit_replans_exactly_the_jobs_that_read_it(finished_study, section, tmp_path):
    edit, expected = EDITS[section]
    edit_file = tmp_path / "edit.yaml"
    edit_file.write_text(yaml.safe_dump(edit))
    got = _plan(finished_study, edit_file)
    assert got == expected, f"missing: {sorted(expected - got)}\nunexpected: {sorted(got - expected)}"


@pytest.mark.slow
def test_an_edited_data_file_replans_the_jobs_that_read_it(finished_study):
    """A local source is an input: editing a LongBench task file replans the evaluations that
    read it (and nothing else); restoring it (content and time) replans nothing."""
    import os
    import time

    path = finished_study[4] / "trec.jsonl"
    text, stat = path.read_text(), path.stat()
    try:
        path.write_text(text + "{}\n")
        os.utime(path, (stat.st_atime, time.time() + 5))  # newer than every output
        assert _plan(finished_study) == evals() | ttt(suites=["longbench"]) | reports(*EVAL_REPORTS)
    finally:
        path.write_text(text)
        os.utime(path, (stat.st_atime, stat.st_mtime))
    assert _plan(finished_study) == set()
