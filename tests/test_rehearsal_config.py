"""config/rehearsal.yaml is config/paper.yaml with sizes changed and nothing else: its resolved
config differs from the resolved paper config only in the whitelisted keys below (sizes, process
counts, names, and paths that point hub downloads at local stand-ins in the same formats), and the
ratios the paper fixes stay as they are. A key added to paper.yaml is rehearsed unless it is
whitelisted here."""

from fnmatch import fnmatchcase

import pytest

from refine.config import REPO_ROOT, ConfigError, merge_config_files, read_layered_config
from refine.study import validate_config

DEFAULT, PAPER, REHEARSAL = (REPO_ROOT / "config" / n for n in ("config.yaml", "paper.yaml", "rehearsal.yaml"))

# Keys allowed to differ, each with the reason.
WHITELIST = {
    "results_dir": "its own results folder",
    "study": "its own MLflow experiments",
    "device": "CPU processes instead of GPUs",
    "procs_per_job": "2 CPU processes per training job instead of 8 GPUs",
    "threads": "threads per process on a 2-core machine",
    "seeds": "one seed of three (a count: every job of a seed runs)",
    "tokenizer.path": "the local Llama-2-format tokenizer",
    "models.*.pretrained": "local checkpoints in the hub layouts",
    "data.*.source": "local SlimPajama-schema JSONL",
    "data.*.num_docs": "size",
    "data.*.seq_len": "size",
    "*.train.max_steps": "size (the paper's ratios are checked below)",
    "*.train.batch_size": "size (the paper's ratios are checked below)",
    "*.train.grad_accum": "size (sequences per step = batch_size x grad_accum; ratios and accumulation checked below)",
    "*.train.checkpoint_every": "a few steps, so that checkpoints are written and resumed",
    "*.refine.mini_batch_size": "size (global batch / mini-batch checked below)",
    "eval.niah.lengths": "context lengths",
    "eval.niah.samples": "sample count",
    "eval.qa.source": "the authors' prompt-formatted RULER-QA parquet, locally",
    "eval.qa.train_source": "its training split, locally",
    "eval.qa.lengths": "context lengths",
    "eval.qa.samples": "sample count",
    "eval.qa.train_samples": "sample count",
    "eval.qa.train_length": "context length",
    "eval.longbench.source": "the official raw JSONL, locally",
    "eval.longbench.model_max_length": "context length",
    "eval.longbench.max_length": "context length (the authors' rule: context - 32)",
}


def _flat(node, prefix=""):
    if isinstance(node, dict) and node:
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def _resolved(*files):
    return validate_config(merge_config_files([DEFAULT, *files]), "test", check_paths=False)  # assets may not exist yet


@pytest.fixture(scope="module")
def configs():
    return _flat(_resolved(PAPER)), _flat(_resolved(REHEARSAL))


def test_rehearsal_differs_from_paper_only_in_whitelisted_keys(configs):
    paper, rehearsal = configs
    assert paper.keys() == rehearsal.keys(), "the rehearsal adds or drops keys of the paper config"
    differ = {k for k in paper if paper[k] != rehearsal[k]}
    outside = sorted(k for k in differ if not any(fnmatchcase(k, pattern) for pattern in WHITELIST))
    assert not outside, {k: (paper[k], rehearsal[k]) for k in outside}
    assert {"device", "models.deltanet.pretrained", "midtrain.refine.train.max_steps"} <= differ


def test_rehearsal_keeps_what_the_paper_run_exercises(configs):
    paper, rehearsal = configs
    kept = ("midtrain.refine.refine.reward", "midtrain.refine.refine.lambda_pg", "midtrain.refine.refine.num_positions",
            "midtrain.refine.refine.rollout_len", "posttrain.nested_refine.refine.reward", "eval.ttt.refine.reward",
            "eval.ttt.reset", "eval.niah.template", "eval.niah.variants", "eval.niah.haystack",
            "eval.longbench.protocol", "eval.longbench.subset", "midtrain.refine.train.bf16", "tokenizer.kind",
            "models.lact.checkpoint_format")  # fmt: skip
    for key in kept:
        assert rehearsal[key] == paper[key], key
    # both distributed strategies run: DDP in the mid-training SFT baselines, FSDP2 in REFINE
    # mid-training and in post-training
    assert {rehearsal[f"midtrain.{m}.train.parallel"] for m in ("sft", "sft_matched")} == {"ddp"}
    fsdp = ["midtrain.refine"] + [f"posttrain.{m}" for m in ("sft", "nested_sft", "nested_refine")]
    assert {rehearsal[f"{m}.train.parallel"] for m in fsdp} == {"fsdp"}
    # the memory settings of the paper run are rehearsed as they are (not whitelisted: equal) and
    # do something there: gradient accumulation, checkpointing and REFINE micro-batches
    for key in ("midtrain.refine.refine.micro_batch_size", "posttrain.nested_refine.refine.micro_batch_size",
                "eval.ttt.refine.micro_batch_size"):  # fmt: skip
        assert rehearsal[key] == paper[key], key
    accumulated = [k for k in paper if k.endswith(".train.grad_accum") and paper[k] > 1]
    assert accumulated and all(rehearsal[k] > 1 for k in accumulated), accumulated
    assert not any(v for k, v in rehearsal.items() if k.endswith(".train.gradient_checkpointing"))
    per_process = rehearsal["midtrain.refine.refine.mini_batch_size"] // rehearsal["procs_per_job"]
    assert per_process > rehearsal["midtrain.refine.refine.micro_batch_size"], "no micro-batches in the rehearsal"


def test_rehearsal_keeps_the_papers_ratios(configs):
    paper, rehearsal = configs

    def per_step(c, section):  # sequences per optimizer step of an NTP section
        return c[f"{section}.train.batch_size"] * c[f"{section}.train.grad_accum"]

    def ratios(c):
        return (
            c["midtrain.refine.train.batch_size"] / c["midtrain.refine.refine.mini_batch_size"],  # mini-batches
            c["midtrain.sft_matched.train.max_steps"] / c["midtrain.sft.train.max_steps"],  # matched steps
            per_step(c, "midtrain.sft") / per_step(c, "midtrain.sft_matched"),  # matched batch
            per_step(c, "midtrain.sft") / c["midtrain.refine.train.batch_size"],  # REFINE's batch
            c["midtrain.refine.train.max_steps"] / c["midtrain.sft_matched.train.max_steps"],
            c["posttrain.nested_sft.train.max_steps"] / c["posttrain.sft.train.max_steps"],
            c["posttrain.nested_refine.train.max_steps"] / c["posttrain.nested_sft.train.max_steps"],
        )

    assert ratios(rehearsal) == ratios(paper)
    procs = rehearsal["procs_per_job"]
    assert procs >= 2, "the rehearsal runs every training job in several processes"
    for key in ("midtrain.refine.refine.mini_batch_size", "midtrain.sft_matched.train.batch_size"):
        assert rehearsal[key] % procs == 0, key


def test_extends_is_resolved_and_checked(tmp_path):
    layered = read_layered_config(REHEARSAL)
    assert "extends" not in layered and layered["models"]["deltanet"]["arch"] == "delta_net"  # from paper.yaml
    loop = tmp_path / "a.yaml"
    loop.write_text(f"extends: {loop}\n")
    with pytest.raises(ConfigError, match="cycle"):
        read_layered_config(loop)
    missing = tmp_path / "b.yaml"
    missing.write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml.*not found"):
        read_layered_config(missing)
