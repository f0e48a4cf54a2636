"""`refine.select_per_mini_batch`: each mini-batch selects its positions from its own forward (no no-grad
scoring pass for the later mini-batches). With one mini-batch it is the release's update; with several,
the one-pass and re-encode modes still agree, and no row is scored by a separate pass (issue 12)."""

import copy

import pytest
import torch

import refine.train.refine as refine_module
from refine.bench.update import random_batch
from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.train.optim import apply_updates
from refine.train.refine import RefineMethod

TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_heads": 2}


def _run(model, cfg, mode, batch, seed=0):
    model = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(seed)
    steps = apply_updates(model, RefineMethod(cfg, mode), batch, optimizer)
    return steps, [p.detach().clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model("delta_net", 50, TINY).train()
    torch.manual_seed(1)
    return model, random_batch(4, 64, 50)


def test_one_mini_batch_is_the_same_update(setup):
    model, batch = setup
    base = RefineConfig(num_positions=3, rollout_len=3, margin=8)
    steps_a, params_a = _run(model, base, "onepass", batch)
    steps_b, params_b = _run(model, RefineConfig(**{**base.__dict__, "select_per_mini_batch": True}), "onepass", batch)
    assert steps_a == steps_b
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))


def test_per_mini_batch_selection_runs_no_scoring_pass_and_matches_reencode(setup, monkeypatch):
    model, batch = setup
    cfg = RefineConfig(num_positions=3, rollout_len=3, margin=8, mini_batch_size=1, select_per_mini_batch=True)
    calls = []
    original = refine_module.score_pass
    monkeypatch.setattr(refine_module, "score_pass", lambda *a, **k: calls.append(a[1].shape[0]) or original(*a, **k))
    steps_one, params_one = _run(model, cfg, "onepass", batch)
    assert len(steps_one) == 4 and calls == []  # 4 optimizer steps, no row scored twice
    steps_ref, params_ref = _run(model, cfg, "reencode", batch)
    assert len(calls) == 4  # the reference twin scores each mini-batch with a no-grad pass, at the same weights
    for a, b in zip(steps_one, steps_ref, strict=True):
        assert a["pg_loss"] == pytest.approx(b["pg_loss"], abs=1e-5)
        assert a["ntp_loss"] == pytest.approx(b["ntp_loss"], abs=1e-5)
        assert a["entropy_selected"] == pytest.approx(b["entropy_selected"], abs=1e-5)
    for a, b in zip(params_one, params_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_batch_wide_selection_scores_the_later_mini_batches_with_the_first_weights(setup, monkeypatch):
    model, batch = setup
    cfg = RefineConfig(num_positions=3, rollout_len=3, margin=8, mini_batch_size=1)
    calls = []
    original = refine_module.score_pass
    monkeypatch.setattr(refine_module, "score_pass", lambda *a, **k: calls.append(a[1].shape[0]) or original(*a, **k))
    _run(model, cfg, "onepass", batch)
    assert calls == [3]  # rows 1..3 in one no-grad pass before the first step (the release's order)


def test_the_flag_is_a_bool():
    with pytest.raises(ValueError, match="select_per_mini_batch"):
        RefineConfig(select_per_mini_batch="yes")
