"""The shared training loop: every parameter trains, accumulation == full batch, kill + resume ==
straight run (bitwise), non-finite losses stop the run before anything is written, and the
optimizer grouping and LR schedule have the intended shape."""

import math

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from refine.tracking import NullTracker
from refine.train.checkpoint import latest_checkpoint, load_checkpoint
from refine.train.config import TrainConfig
from refine.train.loop import NonFiniteLossError, iterate_batches, train
from refine.train.ntp import NTPMethod, evaluate_ntp, next_token_loss
from refine.train.optim import build_optimizer, lr_factor, parameter_groups

VOCAB, T = 64, 16


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


class RowDataset(torch.utils.data.Dataset):
    """n random rows of length T; the labels are the inputs (every token counts)."""

    def __init__(self, n: int, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, T), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def cfg(**overrides) -> TrainConfig:
    base = dict(lr=1e-2, max_steps=6, batch_size=4, checkpoint_every=3, log_every=1, bf16=False)
    return TrainConfig(**{**base, **overrides})


def read_tsv(out_dir) -> pd.DataFrame:
    return pd.read_csv(out_dir / "metrics.tsv", sep="\t")


def test_every_parameter_changes_after_one_step(tmp_path):
    model = tiny_llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    final = train(model, NTPMethod(), RowDataset(8), cfg(max_steps=1), tmp_path, NullTracker())
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    assert final["optimizer_steps"] == 1 and final["tokens"] == 4 * T
    assert (tmp_path / "model" / "config.json").is_file()


def test_grad_accumulation_equals_full_batch(tmp_path):
    full, accum = tiny_llama(), tiny_llama()
    train(full, NTPMethod(), RowDataset(8), cfg(max_steps=1, batch_size=4), tmp_path / "a", NullTracker())
    train(
        accum, NTPMethod(), RowDataset(8), cfg(max_steps=1, batch_size=2, grad_accum=2),
        tmp_path / "b", NullTracker(),
    )  # fmt: skip
    for (name, p), q in zip(full.named_parameters(), accum.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
    a, b = read_tsv(tmp_path / "a").iloc[0], read_tsv(tmp_path / "b").iloc[0]
    for key in ("loss", "grad_norm", "ntp_accuracy", "tokens"):  # grad_norm sees the 1/grad_accum scale
        assert b[key] == pytest.approx(a[key], rel=1e-6), key


class Killed(Exception):
    pass


class KillAtBatch:
    """NTP that raises on its `at`-th batch (1-based), like a process killed mid-run."""

    def __init__(self, at: int):
        self.at, self.seen, self.inner = at, 0, NTPMethod()

    def updates(self, model, batch):
        self.seen += 1
        if self.seen == self.at:
            raise Killed
        yield from self.inner.updates(model, batch)


def test_kill_and_resume_is_bitwise_equal_to_a_straight_run(tmp_path):
    data = RowDataset(12)  # 3 batches per epoch: the run crosses an epoch boundary
    settings = cfg(schedule="cosine", warmup_steps=2, decay_start=0.3)
    straight = tiny_llama()
    train(straight, NTPMethod(), data, settings, tmp_path / "straight", NullTracker())

    with pytest.raises(Killed):  # checkpoint at step 3, steps 4 logged, killed in step 5
        train(tiny_llama(), KillAtBatch(5), data, settings, tmp_path / "resumed", NullTracker())
    assert read_tsv(tmp_path / "resumed")["step"].tolist() == [1, 2, 3, 4]
    resumed = tiny_llama(seed=7)  # a fresh process would build a differently initialised model
    train(resumed, NTPMethod(), data, settings, tmp_path / "resumed", NullTracker())

    for (name, p), q in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name
    a, b = read_tsv(tmp_path / "straight"), read_tsv(tmp_path / "resumed")
    assert b["step"].tolist() == [1, 2, 3, 4, 5, 6]
    pd.testing.assert_frame_equal(a.drop(columns="wall_time_s"), b.drop(columns="wall_time_s"))
    assert b["wall_time_s"].is_monotonic_increasing


class NaNLossAt:
    """NTP whose `at`-th loss is NaN, or (gradient=True) finite but with a NaN gradient."""

    def __init__(self, at: int, gradient: bool):
        self.at, self.gradient, self.seen, self.inner = at, gradient, 0, NTPMethod()

    def updates(self, model, batch):
        for loss, metrics in self.inner.updates(model, batch):
            self.seen += 1
            if self.seen == self.at:
                weight = next(model.parameters())
                loss = loss + (torch.sqrt(weight * 0).sum() if self.gradient else torch.tensor(math.nan))
            yield loss, metrics


@pytest.mark.parametrize("gradient", [False, True], ids=["loss", "grad_norm"])
def test_non_finite_loss_raises_and_keeps_the_last_checkpoint(tmp_path, gradient):
    model = tiny_llama()
    with pytest.raises(NonFiniteLossError, match="optimizer step 3"):
        train(model, NaNLossAt(3, gradient), RowDataset(8), cfg(checkpoint_every=2), tmp_path, NullTracker())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no step was taken with it
    reloaded = tiny_llama(seed=7)
    state = load_checkpoint(latest_checkpoint(tmp_path), reloaded, build_optimizer(reloaded, cfg()))
    assert state.step == 2
    for p, q in zip(model.parameters(), reloaded.parameters(), strict=True):
        assert torch.equal(p, q)
    assert read_tsv(tmp_path)["step"].tolist() == [1, 2]


def test_data_order_is_seeded_and_resumable():
    data = RowDataset(10)
    straight = iterate_batches(data, 3, seed=5)
    first = [next(straight)["input_ids"] for _ in range(7)]  # 3 per epoch: crosses two epochs
    later = iterate_batches(data, 3, seed=5, start=4)
    assert all(torch.equal(first[i], next(later)["input_ids"]) for i in range(4, 7))
    assert not torch.equal(first[0], next(iterate_batches(data, 3, seed=6))["input_ids"])
    epoch = torch.cat(first[:3])
    assert len({tuple(r.tolist()) for r in epoch}) == 9  # no row twice within an epoch


def test_next_token_loss_matches_hf_and_evaluate_weights_tokens():
    model = tiny_llama()
    data = RowDataset(5)
    batch = {k: torch.stack([data[i][k] for i in range(5)]) for k in ("input_ids", "labels")}
    batch["labels"][:, :5] = -100
    out = model(input_ids=batch["input_ids"], labels=batch["labels"])
    loss, correct, count = next_token_loss(out.logits, batch["labels"])
    torch.testing.assert_close(loss, out.loss)
    assert count == 5 * (T - 5)
    full = evaluate_ntp(model, data, batch_size=5)
    split = evaluate_ntp(model, data, batch_size=2)  # batches of 2, 2, 1
    assert split["val_tokens"] == full["val_tokens"] == 5 * (T - 1)
    assert split["val_loss"] == pytest.approx(full["val_loss"], rel=1e-6)
    assert split["val_accuracy"] == full["val_accuracy"]
    assert model.training


def test_weight_decay_only_on_weight_matrices():
    model = tiny_llama()
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "model.embed_tokens.weight" not in decayed
    assert not any("norm" in n for n in decayed)
    assert {"lm_head.weight", "model.layers.0.self_attn.q_proj.weight"} <= decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_schedule_shape(schedule):
    c = TrainConfig(max_steps=100, warmup_steps=10, schedule=schedule, decay_start=0.5, min_lr_ratio=0.1)
    f = [lr_factor(s, c) for s in range(c.max_steps)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0  # linear warmup over 10 steps
    assert all(a < b for a, b in zip(f[:10], f[1:10], strict=False))
    assert all(x == 1.0 for x in f[10:51])  # flat until the decay starts at 50
    if schedule == "constant":
        assert all(x == 1.0 for x in f[10:])
    else:
        assert all(a > b for a, b in zip(f[50:], f[51:], strict=False))  # strictly decreasing
        assert f[-1] == pytest.approx(0.1, abs=0.02) and min(f) >= 0.1
        assert lr_factor(c.max_steps, c) == pytest.approx(0.1)
        mid = f[75]  # halfway through the decay: cosine and linear agree at 0.55
        assert mid == pytest.approx(0.55)


@pytest.mark.parametrize(
    "key, value",
    [("lr", 0.0), ("lr", "3e-4"), ("schedule", "step"), ("grad_accum", 0), ("warmup_steps", 200),
     ("decay_start", 1.0), ("betas", (0.9, 1.0)), ("grad_clip", 0.0), ("eval_every", 0)],
)  # fmt: skip
def test_config_rejects_bad_values_naming_the_key(key, value):
    with pytest.raises(ValueError, match=f"train.{key}"):
        TrainConfig(**{key: value})
