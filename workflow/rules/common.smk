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
GPU_PER_JOB = 1 if config["device"] == "cuda" else 0

# The validated config, with defaults filled in, is what every job reads: overrides given
# with --config/--configfile reach the jobs too. Rewritten only when it changes.
RESOLVED = f"{RESULTS}/config.resolved.yaml"
Path(RESULTS).mkdir(parents=True, exist_ok=True)
_text = yaml.safe_dump(config, sort_keys=False)
if not Path(RESOLVED).exists() or Path(RESOLVED).read_text() != _text:
    Path(RESOLVED).write_text(_text)


wildcard_constraints:
    model="|".join(MODELS),
    seed=r"\d+",


def section_hash(*keys):
    node = config
    for key in keys:
        node = node[key]
    return config_hash(node)


def final_targets():
    return [
        f"{RESULTS}/ntp_table.csv",
        f"{RESULTS}/figures/training_curves.png",
    ]


def ntp_eval_input(wildcards):
    return f"{RESULTS}/models/{wildcards.model}/{wildcards.run}/final_metrics.json"


def ntp_runs():
    runs = []
    for model in MODELS:
        runs.append(f"{RESULTS}/eval/ntp/{model}/base.json")
        runs += [f"{RESULTS}/eval/ntp/{model}/mid-sft-s{seed}.json" for seed in SEEDS]
    return runs
