"""Checkpoints: a round trip restores model, optimizer, loop state and every RNG; a save that dies
midway leaves the previous checkpoint as the latest and intact."""

import random

import numpy as np
import pytest
import torch
from torch import nn

import refine.train.checkpoint as checkpoint
from refine.train.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint


def model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.LayerNorm(7), nn.Linear(7, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer


def take_step(model, optimizer):
    model(torch.randn(4, 5)).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad()


def draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist(), np.random.randn()


def test_round_trip_restores_everything(tmp_path):
    model, optimizer = model_and_optimizer(0)
    take_step(model, optimizer)
    state = TrainState(step=1, batches=2, tokens=40, wall_time_s=1.5, last_metrics={"loss": 0.25})
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_checkpoint(tmp_path, model, optimizer, state)
    expected_draws = draws()
    take_step(model, optimizer)
    expected_params = [p.detach().clone() for p in model.parameters()]

    other, other_optimizer = model_and_optimizer(1)
    loaded = load_checkpoint(latest_checkpoint(tmp_path), other, other_optimizer)
    assert loaded == state
    assert draws() == expected_draws
    take_step(other, other_optimizer)  # same RNG, weights and Adam moments → the same next step
    for p, q in zip(expected_params, other.parameters(), strict=True):
        assert torch.equal(p, q)


def test_no_checkpoint_gives_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = model_and_optimizer(0)
    take_step(model, optimizer)
    first = save_checkpoint(tmp_path, model, optimizer, TrainState(step=1, batches=1))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    take_step(model, optimizer)

    real_save = torch.save
    calls = []

    def dying_save(obj, path):
        calls.append(path)
        if len(calls) == 2:  # the model file is written, the optimizer file is not
            raise OSError("disk full")
        real_save(obj, path)

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, model, optimizer, TrainState(step=2, batches=2))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)

    assert latest_checkpoint(tmp_path) == first
    restored, restored_optimizer = model_and_optimizer(1)
    assert load_checkpoint(first, restored, restored_optimizer).step == 1
    for key, value in restored.state_dict().items():
        assert torch.equal(value, saved[key]), key

    second = save_checkpoint(tmp_path, model, optimizer, TrainState(step=2, batches=2))
    assert latest_checkpoint(tmp_path) == second
    remaining = sorted(p.name for p in (tmp_path / checkpoint.CHECKPOINT_DIR).iterdir())
    assert remaining == [checkpoint.LATEST, second.name]  # the old one and the half-written one are gone


def test_latest_naming_an_incomplete_directory_is_an_error(tmp_path):
    model, optimizer = model_and_optimizer(0)
    path = save_checkpoint(tmp_path, model, optimizer, TrainState(step=1, batches=1))
    (path / "state.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        latest_checkpoint(tmp_path)
