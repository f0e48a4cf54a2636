# Validation of the config (schema + dataclasses + sources) at DAG build time, path helpers, and
# the rerun trigger of every rule: a hash of exactly the config values its job reads.

import sys
from pathlib import Path

import yaml

from refine.config import (
    ConfigError,
    check_device,
    config_hash,
    lookup_key,
    merge_config_files,
    read_config_file,
)
from refine.eval.suites import SUITES as SUITE_REGISTRY
from refine.names import MID_METHODS as _MID_METHODS
from refine.names import POST_METHODS as _POST_METHODS
from refine.names import SUITES as _SUITES
from refine.bench import bench_config
from refine.study import validate_config

_CONFIG_SOURCE = ", ".join(str(f) for f in workflow.configfiles) or "config"
try:
    # A config file with `extends:` (config/rehearsal.yaml) is merged over the file it names, in
    # Snakemake's order: the Snakefile's configfile, then --configfile files, then --config values.
    _cli_files = [Path(f).absolute() for f in workflow.config_settings.configfiles]
    _files = [f for f in workflow.configfiles if Path(f).absolute() not in _cli_files] + _cli_files
    if any("extends" in read_config_file(f) for f in _files):
        config = merge_config_files(_files, dict(workflow.config_settings.config))
    config = validate_config(config, _CONFIG_SOURCE)
    bench_config(config.get("bench"), _CONFIG_SOURCE)  # `refine bench`'s sizes (refine.bench sits above refine.study)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

RESULTS = config["results_dir"]
MODELS = list(config["models"])
SEEDS = config["seeds"]
SPLITS = [split for split, spec in config["data"].items() if spec is not None]
GPU_PER_JOB = config["gpus_per_job"] if config["device"] == "cuda" else 0
PROCS_PER_JOB = config["procs_per_job"] or max(GPU_PER_JOB, 1)
# Training in several processes runs under torchrun (DDP/FSDP per train.parallel; NCCL on GPUs,
# gloo on a CPU); otherwise plain `refine`.
TRAIN = f"torchrun --standalone --nproc_per_node={PROCS_PER_JOB} -m refine.cli" if PROCS_PER_JOB > 1 else "refine"
MID_METHODS = [m for m in _MID_METHODS if m in config["midtrain"]]
POST_METHODS = list(_POST_METHODS)
SUITES = list(_SUITES)

# The validated config, with defaults filled in, is what every job reads: overrides given
# with --config/--configfile reach the jobs too. It is written when the workflow starts to run
# (never by a dry run) and only when it changes; rerun decisions never depend on it (see
# `reads` below), so rewriting it reruns nothing.
RESOLVED = f"{RESULTS}/config.resolved.yaml"


def prepare_run():
    """Before the first job (never in a dry run; `onstart` in workflow/rules/hooks.smk): CUDA
    is there if jobs run here with `device: cuda`, and the resolved config is written."""
    try:
        if workflow.local_exec:  # jobs run on this machine
            check_device(config, _CONFIG_SOURCE)
    except ConfigError as err:
        print(f"refine: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    Path(RESULTS).mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False)
    if not Path(RESOLVED).exists() or Path(RESOLVED).read_text() != text:
        Path(RESOLVED).write_text(text)


localrules:
    all,
    tracking,
    report_ntp,
    report_curves,


wildcard_constraints:
    model="|".join(MODELS),
    seed=r"\d+",
    midmethod="|".join(MID_METHODS),
    postmethod="|".join(POST_METHODS),
    suite="|".join(SUITES),
    split="|".join(SPLITS),
    run=r"base|(mid|post)-[a-z_]+-s\d+",


# --- what each job reads -----------------------------------------------------------------------
# Dotted config keys per rule ({model}, {split}, ... are the job's wildcards). A job reruns when
# the value of one of its keys changes (`trigger`, a params entry: params are a default rerun
# trigger) or when an input file changes (Snakemake's own mtime trigger); editing a key no job
# listed here reads reruns nothing. tests/test_rerun_triggers.py edits each section in turn and
# checks the jobs `snakemake -n` plans.
RUNTIME = ["device", "threads", "study"]
# each suite's own keys (`eval_reads`, `report_reads` of refine.eval.suites)
SUITE_EVAL_READS = [key for suite in SUITE_REGISTRY.values() for key in suite.eval_reads]
QA_COMMON = [f"eval.qa.{k}" for k in ("source", "num_docs", "max_new_tokens")]
READS = {
    "tokenizer": ["tokenizer", "corpus"],
    "data_split": ["data.{split}"],  # + corpus for generated splits (`reads_hash`)
    "eval_data_niah": ["eval.niah", "corpus"],
    "eval_data_qa_test": QA_COMMON + ["eval.qa.lengths", "eval.qa.samples", "corpus"],
    "eval_data_qa_train": QA_COMMON
    + [f"eval.qa.{k}" for k in ("train_source", "train_samples", "train_length")]
    + ["corpus"],
    "eval_data_longbench": [
        f"eval.longbench.{k}" for k in ("source", "tasks", "records_per_task", "context_words", "seed")
    ]
    + ["corpus"],
    "tracking": ["study"],
    "pretrain": RUNTIME + ["models.{model}", "pretrain"],
    "midtrain": RUNTIME + ["midtrain.{midmethod}"],
    "posttrain": RUNTIME + ["posttrain.max_answer_tokens", "posttrain.{postmethod}"],
    "eval_run": RUNTIME + ["eval.batch_size", "eval.ntp", "eval.ttt.reset"] + SUITE_EVAL_READS,
    "eval_ttt": RUNTIME + ["eval.batch_size", "eval.ttt"],  # + the {suite}'s eval_reads (`reads_hash`)
    **{f"report_{name}": list(suite.report_reads) for name, suite in SUITE_REGISTRY.items() if suite.report_reads},
}


def reads_hash(rule_name, wildcards=None):
    """The hash of the config values the rule `rule_name` reads for the job of `wildcards`."""
    keys = [k.format(**dict(wildcards.items())) if wildcards is not None else k for k in READS[rule_name]]
    if rule_name == "data_split" and config["data"][wildcards.split]["source"] == "generated":
        keys.append("corpus")
    if rule_name == "tokenizer":  # a split's own corpus (refine.data.build) adds to the vocabulary
        keys += [f"data.{s}.corpus" for s, spec in config["data"].items() if spec and "corpus" in spec]
    if rule_name == "eval_ttt":
        keys += SUITE_REGISTRY[wildcards.suite].eval_reads
    return config_hash({k: lookup_key(config, k) for k in keys})


def trigger(rule_name):
    """A params function: the job's `reads_hash` (named functions, not lambdas, in rules)."""

    def job_trigger(wildcards):
        return reads_hash(rule_name, wildcards)

    job_trigger.__name__ = f"trigger_{rule_name}"
    return job_trigger


def local_files(value, suffixes=None):
    """The files of a local source (a file, or the files below a directory; [] for generated data,
    hub names and keywords), so a job reruns when the data it reads changes."""
    if not value or not Path(value).expanduser().exists():
        return []
    path = Path(value).expanduser()
    if path.is_file():
        return [str(path)]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [str(p) for p in files if suffixes is None or p.suffix in suffixes]


def data_split_sources(wildcards):
    return local_files(config["data"][wildcards.split]["source"], (".txt", ".jsonl", ".parquet"))


def tokenizer_sources(wildcards):
    return local_files(config["tokenizer"]["path"]) if config["tokenizer"]["kind"] == "pretrained" else []


def qa_sources(wildcards):
    qa = config["eval"]["qa"]
    return local_files(qa["source"]) + local_files(qa["train_source"])


def essay_sources(wildcards):
    return local_files(config["eval"]["niah"]["essay_dir"])


def suite_data(suite):
    """What `refine eval <suite>` reads: the suite's files under data/eval/ and the files of its local
    sources (`data_files`, `source_keys` of refine.eval.suites)."""
    spec = SUITE_REGISTRY[suite]
    files = [f"{RESULTS}/data/eval/{name}" for name in spec.data_files]
    for key in spec.source_keys:
        files += local_files(lookup_key(config, key), spec.source_suffixes)
    return files


def ttt_data(wildcards):
    """The evaluation items of a test-time-training job's suite (and its local sources)."""
    return suite_data(wildcards.suite)


def pretrain_data(wildcards):
    """Token data of the pretraining split, unless the model is imported from a checkpoint."""
    entry = config["models"][wildcards.model]
    if entry["pretrained"]:
        return local_files(entry["pretrained"])
    return f"{RESULTS}/data/pretrain.npy"


def run_seed(wildcards):
    """The seed of a run directory name (`...-s<N>`), 0 for the base model."""
    return int(wildcards.run.rsplit("-s", 1)[1]) if "-s" in wildcards.run else 0


def eval_root(wildcards, output):
    """The evaluation root (results/eval) above a rule's first output <root>/<suite>/<model>/..."""
    path = Path(output[0])
    return str(path.parents[len(path.relative_to(f"{RESULTS}/eval").parts) - 1])


def trained(wildcards):
    return f"{RESULTS}/models/{wildcards.model}/{wildcards.run}/final_metrics.json"


def mid_runs():
    return ["base"] + [f"mid-{m}-s{s}" for m in MID_METHODS for s in SEEDS]


def post_runs():
    return [f"post-{m}-s{s}" for m in POST_METHODS for s in SEEDS]


def eval_outputs(suite):
    """(run, ttt) pairs of the paper's tables for `suite` (REFINE.md §5); every trained run is
    evaluated on every suite, test-time training only where the paper's tables have it."""
    pairs = [(run, "none") for run in mid_runs() + post_runs()]
    pairs += [(f"{run}-s{s}", t) for run in SUITE_REGISTRY[suite].ttt_runs for s in SEEDS for t in ("sft", "refine")]
    return [f"{RESULTS}/eval/{suite}/{model}/{run}/ttt-{ttt}/scores.json" for model in MODELS for run, ttt in pairs]


def ntp_runs():
    return [f"{RESULTS}/eval/ntp/{model}/{run}.json" for model in MODELS for run in mid_runs()]


def all_trained_runs():
    runs = mid_runs() + post_runs()
    return [f"{RESULTS}/models/{model}/{run}/final_metrics.json" for model in MODELS for run in runs]


def final_targets():
    """The tables of the study: held-out NTP, the training curves, each suite's table, the REFINE
    curves and the differences between methods."""
    tables = [f"{RESULTS}/{suite.outputs[0].path}" for suite in SUITE_REGISTRY.values()]
    extra = [f"{RESULTS}/figures/refine_curves.png", f"{RESULTS}/differences_table.csv"]  # report.smk's
    return [f"{RESULTS}/ntp_table.csv", f"{RESULTS}/figures/training_curves.png", *tables, *extra]
