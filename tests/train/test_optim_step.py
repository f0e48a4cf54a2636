"""The one optimizer step (`refine.train.optim.optimizer_step` / `apply_updates`): it equals the
hand-written clip + step + zero, refuses a non-finite gradient before touching the weights, and a
micro-batch's loss joins the next step (one step per loss with metrics)."""

import math

import pytest
import torch
from torch import nn

from refine.train.optim import NonFiniteLossError, apply_updates, optimizer_step


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _loss(model, x):
    return model(x).pow(2).mean() * 100.0  # large enough that clipping at 1.0 acts


def test_optimizer_step_equals_clip_step_zero_by_hand():
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    a, b = _model(), _model()
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-3)
    _loss(a, x).backward()
    norm_a = torch.nn.utils.clip_grad_norm_(a.parameters(), 1.0).item()
    for group in opt_a.param_groups:
        group["lr"] = 5e-3
    opt_a.step()
    opt_a.zero_grad(set_to_none=True)
    _loss(b, x).backward()
    norm_b = optimizer_step(opt_b, 1.0, lr=5e-3)
    assert norm_b == pytest.approx(norm_a) and norm_b > 1.0  # the norm before clipping
    assert all(p.grad is None for p in b.parameters())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert all(g["lr"] == 5e-3 for g in opt_b.param_groups)


def test_non_finite_gradient_raises_before_the_step():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    (_loss(model, torch.randn(3, 4)) * math.nan).backward()
    with pytest.raises(NonFiniteLossError, match="optimizer step 7"):
        optimizer_step(optimizer, 1.0, step=6)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


class _TwoMicroBatchesThenStep:
    """Yields the loss of rows [0, 2) without metrics (a micro-batch), then rows [2, 4) with metrics."""

    def updates(self, model, batch):
        x = batch["x"]
        yield _loss(model, x[:2]) / 2, None
        yield _loss(model, x[2:]) / 2, {"loss": 0.0}


def test_apply_updates_joins_micro_batches_into_one_step():
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(2))
    a, b = _model(), _model()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    steps = apply_updates(a, _TwoMicroBatchesThenStep(), {"x": x}, opt_a, max_norm=None)
    assert steps == [{"loss": 0.0}]
    ((_loss(b, x[:2]) + _loss(b, x[2:])) / 2).backward()
    optimizer_step(opt_b, None)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
