"""bf16 autocast with fp32 master weights on CUDA: one optimizer step through the shared loop
(`refine.train.loop.train`, TrainConfig(bf16=True), where autocast is on) keeps every parameter
fp32, gives a finite loss, and at the paper's lr 1e-6 changes every weight element that got a
non-zero gradient (the GPU twin of tests/train/test_master_weights.py). A bf16 weight could not
take that step: its spacing near 1.0 is 2^-7 ~ 7.8e-3, so an update of ~1e-6 rounds away.

The gradient that decides "got a non-zero gradient" is computed on a copy of the model, with the
same autocast, seed and batch as the loop's first step (the whole dataset is one batch).
"""

import copy
import math

import pytest
import torch

from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.tracking import NullTracker
from refine.train.config import TrainConfig
from refine.train.loop import iterate_batches, seed_everything, train
from refine.train.ntp import NTPMethod
from refine.train.refine import RefineMethod

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = "cuda"
VOCAB, SEQ, ROWS = 61, 96, 4
METHODS = {
    "ntp": lambda: NTPMethod(),
    "refine": lambda: RefineMethod(RefineConfig(num_positions=3, rollout_len=4, margin=8)),
}


def _rows():
    x = torch.randint(0, VOCAB, (ROWS, SEQ), generator=torch.Generator().manual_seed(1))
    return [{"input_ids": r, "labels": r.clone(), "attention_mask": torch.ones_like(r)} for r in x]


def _autocast_gradients(model, method, rows, seed):
    """Gradients of the first optimizer step's losses as the loop computes them, on a copy."""
    model = copy.deepcopy(model)
    batch = {k: v.to(DEVICE) for k, v in next(iterate_batches(rows, len(rows), seed)).items()}
    seed_everything(seed)
    updates = method.updates(model, batch)
    while True:
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):  # as the loop does
            loss, metrics = next(updates)
        loss.backward()
        if metrics is not None:
            break
    updates.close()
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_bf16_step_keeps_fp32_masters_and_moves_every_weight_with_a_gradient(tmp_path, name):
    torch.manual_seed(0)
    model = build_model("delta_net", VOCAB, {"hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2},
                        device=DEVICE)  # fmt: skip
    rows = _rows()
    cfg = TrainConfig(lr=1e-6, max_steps=1, batch_size=ROWS, checkpoint_every=1, log_every=1, bf16=True)
    grads = _autocast_gradients(model, METHODS[name](), rows, cfg.seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    final = train(model, METHODS[name](), rows, cfg, tmp_path / "run", NullTracker(), device=DEVICE)
    assert math.isfinite(final["loss"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with_grad = unchanged = 0
    for n, p in model.named_parameters():
        has_grad = grads[n] != 0
        moved = p.detach() != before[n]
        with_grad += int(has_grad.sum())
        unchanged += int((has_grad & ~moved).sum())
    assert with_grad > 0.9 * sum(p.numel() for p in model.parameters())
    assert unchanged == 0
