# Validation of the config (schema + dataclasses) at DAG build time, and path helpers.

from pathlib import Path

import yaml

from refine.config import ConfigError, config_hash, validate_config

try:
    config = validate_config(config, "config")
except ConfigError as err:
    raise WorkflowError(str(err)) from None

RESULTS = config["results_dir"]
MODELS = list(config["models"])
SEEDS = config["seeds"]
GPU_PER_JOB = config["gpus_per_job"] if config["device"] == "cuda" else 0
# Training on several GPUs runs under torchrun (DDP/FSDP per train.parallel); otherwise plain `refine`.
TRAIN = f"torchrun --standalone --nproc_per_node={GPU_PER_JOB} -m refine.cli" if GPU_PER_JOB > 1 else "refine"
MID_METHODS = [m for m in ("sft", "sft_matched", "refine") if m in config["midtrain"]]
POST_METHODS = ["sft", "nested_sft", "nested_refine"]
SUITES = ["niah", "qa", "longbench"]

# The validated config, with defaults filled in, is what every job reads: overrides given
# with --config/--configfile reach the jobs too. Rewritten only when it changes.
RESOLVED = f"{RESULTS}/config.resolved.yaml"
Path(RESULTS).mkdir(parents=True, exist_ok=True)
_text = yaml.safe_dump(config, sort_keys=False)
if not Path(RESOLVED).exists() or Path(RESOLVED).read_text() != _text:
    Path(RESOLVED).write_text(_text)


localrules:
    all,
    tracking,
    report_ntp,
    report_curves,
    report_niah,
    report_qa,
    report_longbench,


wildcard_constraints:
    model="|".join(MODELS),
    seed=r"\d+",
    midmethod="|".join(MID_METHODS),
    postmethod="|".join(POST_METHODS),
    suite="|".join(SUITES),
    run=r"[^/]+",


def section_hash(*keys):
    node = config
    for key in keys:
        node = node[key]
    return config_hash(node)


def pretrain_data(wildcards):
    """Token data of the pretraining split, unless the model is imported from a checkpoint."""
    if config["models"][wildcards.model]["pretrained"]:
        return []
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
    if suite == "qa":
        pairs += [(f"post-nested_refine-s{s}", t) for s in SEEDS for t in ("sft", "refine")]
    if suite == "longbench":
        pairs += [(f"mid-refine-s{s}", t) for s in SEEDS for t in ("sft", "refine")]
    return [f"{RESULTS}/eval/{suite}/{model}/{run}/ttt-{ttt}/scores.json" for model in MODELS for run, ttt in pairs]


def ntp_runs():
    return [f"{RESULTS}/eval/ntp/{model}/{run}.json" for model in MODELS for run in mid_runs()]


def all_trained_runs():
    runs = mid_runs() + post_runs()
    return [f"{RESULTS}/models/{model}/{run}/final_metrics.json" for model in MODELS for run in runs]


def final_targets():
    return [
        f"{RESULTS}/ntp_table.csv",
        f"{RESULTS}/figures/training_curves.png",
        f"{RESULTS}/niah_table.csv",
        f"{RESULTS}/qa_table.csv",
        f"{RESULTS}/longbench_table.csv",
    ]
