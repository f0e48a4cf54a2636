"""The `refine train` stage is deterministic in its seed: the model is built after seeding, so
the base model's random init (and everything trained from it) does not depend on the state the
process's global generators happened to be in (torch seeds each process at random)."""

import copy

import torch
from safetensors.torch import load_file

from refine.config import REPO_ROOT, deep_merge
from refine.data.build import build_data
from refine.study import load_config
from refine.train.run import run_stage

TINY = {
    "seeds": [0],
    "data": {"pretrain": {"num_docs": 64, "seq_len": 32}, "midtrain": {"num_docs": 8, "seq_len": 64},
             "heldout": {"num_docs": 4, "seq_len": 64}},
    "models": {"deltanet": {"arch": "delta_net", "config": {"hidden_size": 32, "num_hidden_layers": 1,
                                                            "num_heads": 2}}},
    "pretrain": {"train": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 10, "log_every": 1}},
}  # fmt: skip


def _weights(out):
    return load_file(str(next((out / "model").glob("*.safetensors"))))


def test_pretraining_from_scratch_does_not_depend_on_the_global_rng(tmp_path):
    cfg = load_config(REPO_ROOT / "config" / "smoke.yaml")
    cfg = deep_merge(cfg, copy.deepcopy(TINY))
    cfg["results_dir"] = str(tmp_path / "results")
    build_data(cfg, tmp_path / "results" / "data")
    outs = []
    for i, junk_seed in enumerate((12345, 67890)):
        torch.manual_seed(junk_seed)  # what a fresh process's random seed amounts to
        out = tmp_path / f"run{i}"
        run_stage(cfg, "pretrain", "deltanet", out)
        outs.append(_weights(out))
    assert outs[0].keys() == outs[1].keys()
    for name in outs[0]:
        assert torch.equal(outs[0][name], outs[1][name]), name
