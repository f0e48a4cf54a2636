"""The REFINE runs that tests/train/test_distributed.py compares between 2 processes and 1.

Each case is (name, arch, method factory, dataset factory, TrainConfig settings): REFINE
mid-training (cosine reward, global mini-batches of 2 out of a global batch of 4, so 2 optimizer
steps per batch), Nested REFINE post-training (hybrid reward, inner REFINE on the context, then
the answer step) and TTT-REFINE's update (exact reward, λ_pg 0.4, on prompt rows), each for the
tiny DeltaNet and the tiny LaCT; REFINE mid-training also in gradient micro-batches of 1 row
(`refine.micro_batch_size`, as paper.yaml). Plus the compute-matched SFT (global batch = REFINE's global
mini-batch). Positions are chosen by argmax of the smoothed entropy and rollouts are greedy, so
that no random draw differs between one process and two (rank r samples from seed + r);
everything else (the update, the gradient synchronisation, the mini-batch split) is the code
paper.yaml runs.
"""

import torch

from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.train.config import TrainConfig
from refine.train.ntp import NTPMethod
from refine.train.posttrain import posttrain_method
from refine.train.refine import RefineMethod

VOCAB, SEQ, PROMPT, ANSWER = 41, 40, 36, 4
ARCHS = ("delta_net", "lact")
STEPS = 3


def tiny(arch: str, seed: int = 0):
    """The tiny model in float64: in float32 the reordering of sums between a 2-row and a 4-row
    forward changes near-zero gradients by ~1e-3 of their size, which AdamW (it divides by the
    gradient scale) and LaCT's fast-weight updates amplify to ~1e-3 on the weights after 3 steps;
    in float64 one process and two agree to ~1e-12."""
    torch.manual_seed(seed)
    overrides = {"hidden_size": 32, "num_hidden_layers": 2}
    if arch == "lact":
        overrides.update(window_size=8, lact_chunk_size=8, num_attn_heads=2, num_lact_heads=2)
    else:
        overrides.update(num_heads=2)
    return build_model(arch, VOCAB, overrides).double()


class Rows(torch.utils.data.Dataset):
    """n rows of SEQ random tokens; `qa=True`: the last ANSWER tokens are the answer
    (labels there only, context_mask on the prompt), as `refine.train.posttrain.QADataset`."""

    def __init__(self, n: int, qa: bool = False, seed: int = 1):
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(seed))
        self.qa = qa

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        row = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
        if self.qa:
            row["labels"][:PROMPT] = -100
            row["context_mask"] = (torch.arange(SEQ) < PROMPT).long()
        return row


def _refine(reward: str, lambda_pg: float, mini_batch_size: int | None = None, micro: int | None = None):
    return RefineConfig(
        num_positions=2, rollout_len=3, margin=4, selection="argmax", temperature=0.0,
        reward=reward, lambda_pg=lambda_pg, mini_batch_size=mini_batch_size, micro_batch_size=micro,
    )  # fmt: skip


def train_cfg(parallel: str = "ddp", **overrides) -> TrainConfig:
    base = dict(lr=1e-2, max_steps=STEPS, batch_size=4, checkpoint_every=100, log_every=1, bf16=False)
    return TrainConfig(**{**base, "parallel": parallel, **overrides})


# name -> (method factory, dataset factory, TrainConfig overrides)
CASES = {
    "mid": (lambda: RefineMethod(_refine("cosine", 0.2, mini_batch_size=2)), lambda: Rows(8), {}),
    # gradient micro-batches of 1 row (paper.yaml): 2 per rank and mini-batch under 2 processes, 4 in one
    "mid_micro": (lambda: RefineMethod(_refine("cosine", 0.2, mini_batch_size=4, micro=1)), lambda: Rows(8), {}),
    "nested": (
        lambda: posttrain_method("nested_refine", _refine("hybrid", 0.2)), lambda: Rows(8, qa=True), {}
    ),
    "ttt": (lambda: RefineMethod(_refine("exact", 0.4)), lambda: Rows(4), {"batch_size": 2}),
    "sft_matched": (lambda: NTPMethod(), lambda: Rows(8), {"batch_size": 2, "max_steps": 4}),
}


def run_case(name: str, arch: str, out_dir, tracker, parallel: str = "ddp", dist=None):
    """Train case `name` on a fresh tiny `arch`; returns the (sharded, under FSDP) model and the
    final metrics."""
    from refine.train.loop import train

    method, data, overrides = CASES[name]
    model = tiny(arch)
    final = train(model, method(), data(), train_cfg(parallel, **overrides), out_dir, tracker, dist=dist)
    return model, final
