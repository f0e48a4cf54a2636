"""Gradient micro-batches (`refine.micro_batch_size`, the authors' verl `ppo_micro_batch_size_per_gpu`)
give the whole mini-batch's gradient and the same optimizer steps per batch, for REFINE mid-training,
Nested REFINE's inner step and TTT; NTP's grad_accum with a smaller batch gives the sequences and
weights of one big batch per optimizer step (the paper config's SFT sections rely on both).

Rollouts are greedy (temperature 0) in the equivalence tests: micro-batches sample their rollouts
separately, so with temperature > 0 one seed draws other tokens (documented in RefineConfig); with
equal rollouts the gradients must agree. The NTP and policy terms compute in fp32 whatever the model
dtype (`refine.train.chunked`, `refine.rl.losses`), so float64 models agree to fp32 rounding.
"""

import pytest
import torch

from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.tracking import NullTracker
from refine.train.config import TrainConfig
from refine.train.loop import train
from refine.train.ntp import NTPMethod
from refine.train.posttrain import NestedMethod
from refine.train.refine import RefineMethod

VOCAB, SEQ = 53, 64


def _model(arch, seed=0):
    torch.manual_seed(seed)
    overrides = {"hidden_size": 32, "num_hidden_layers": 2}
    overrides.update({"window_size": 16, "lact_chunk_size": 16} if arch == "lact" else {"num_heads": 2})
    return build_model(arch, VOCAB, overrides).double()


def _rows(n, seed=1, pad_last=0):
    """n rows of SEQ random tokens; the last row has `pad_last` right-padding (unequal token counts)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, SEQ), generator=g)
    rows = []
    for i in range(n):
        mask = torch.ones(SEQ, dtype=torch.long)
        labels = ids[i].clone()
        if i == n - 1 and pad_last:
            mask[-pad_last:] = 0
            labels[-pad_last:] = -100
        rows.append({"input_ids": ids[i] * mask, "labels": labels, "attention_mask": mask})
    return rows


def _cfg(**overrides):
    base = dict(num_positions=3, rollout_len=4, margin=8, reward="hybrid", temperature=0.0, mini_batch_size=4)
    return RefineConfig(**{**base, **overrides})


def _collate(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def _steps_by_hand(model, method, batch, lr=0.5):
    """The loop's order with plain SGD: backpropagate every yielded loss, step after each loss that
    carries metrics. Returns per step (summed loss value, metrics, gradients, micro-batch count)."""
    torch.manual_seed(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    out, value, parts = [], 0.0, 0
    optimizer.zero_grad()
    for loss, metrics in method.updates(model, batch):
        loss.backward()
        value, parts = value + loss.item(), parts + 1
        if metrics is None:
            continue
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out.append((value, metrics, grads, parts))
        optimizer.step()
        optimizer.zero_grad()
        value, parts = 0.0, 0
    return out


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
@pytest.mark.parametrize("micro", [1, 3])
def test_micro_batched_gradient_equals_the_whole_mini_batch(arch, micro):
    """Per optimizer step: the same gradient, loss and metrics as the un-micro-batched mini-batch,
    over 2 mini-batches with a step between; unequal token counts (a padded row) and a last
    micro-batch shorter than the others (micro 3 of 4 rows) test the weighting."""
    batch = _collate(_rows(8, pad_last=12))
    runs = {}
    for size in (None, micro):
        runs[size] = _steps_by_hand(_model(arch), RefineMethod(_cfg(micro_batch_size=size)), batch)
    whole, split = runs[None], runs[micro]
    assert len(whole) == len(split) == 2  # 8 rows / mini-batch 4: two optimizer steps either way
    assert [parts for *_, parts in whole] == [1, 1]
    assert [parts for *_, parts in split] == [-(-4 // micro)] * 2
    for (l_w, m_w, g_w, _), (l_s, m_s, g_s, _) in zip(whole, split, strict=True):
        assert m_w["reward_std"] > 0  # the policy term is not degenerate
        assert l_s == pytest.approx(l_w, rel=1e-6)
        assert m_s.keys() == m_w.keys()
        for key in m_w:
            assert m_s[key] == pytest.approx(m_w[key], rel=1e-5, abs=1e-6), key
        scale = max(float(g.abs().max()) for g in g_w.values())
        assert g_s.keys() == g_w.keys()
        for name in g_w:
            torch.testing.assert_close(g_s[name], g_w[name], rtol=1e-5, atol=1e-6 * scale, msg=name)


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_micro_batches_through_the_loop_reach_the_same_weights(tmp_path, arch):
    """The training loop (AdamW, grad clip, metrics.tsv): 2 optimizer steps of a batch of 8 in
    mini-batches of 4, with micro-batches of 2 rows or without, reach the same weights; the number
    of optimizer steps per batch is unchanged."""
    dataset = _rows(8)
    cfg = TrainConfig(lr=1e-3, max_steps=2, batch_size=8, checkpoint_every=10, log_every=1, bf16=False)
    models, finals = {}, {}
    for size in (None, 2):
        models[size] = _model(arch)
        finals[size] = train(models[size], RefineMethod(_cfg(micro_batch_size=size)), dataset, cfg,
                             tmp_path / str(size), NullTracker())  # fmt: skip
    assert finals[None]["optimizer_steps"] == finals[2]["optimizer_steps"] == 2
    assert finals[2]["tokens"] == finals[None]["tokens"] == 8 * SEQ  # one batch for both
    assert finals[2]["loss"] == pytest.approx(finals[None]["loss"], rel=1e-6)
    for (name, p), q in zip(models[None].named_parameters(), models[2].parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-6, msg=name)
    changed = [n for n, p in models[2].named_parameters() if not torch.equal(p, _model(arch).get_parameter(n))]
    assert changed  # the runs trained


def test_nested_refine_inner_step_is_micro_batched():
    """Nested REFINE: the inner REFINE step in micro-batches has the whole inner step's gradient;
    the outer answer step follows as its own optimizer step; 2 steps per batch either way."""
    rows = _rows(4)
    for row in rows:  # the prompt is the first 48 tokens, the answer the rest
        row["context_mask"] = (torch.arange(SEQ) < 48).long()
        row["labels"] = torch.where(row["context_mask"].bool(), -100, row["input_ids"])
    batch = _collate(rows)
    runs = {}
    for size in (None, 1):
        method = NestedMethod(RefineMethod(_cfg(mini_batch_size=None, micro_batch_size=size, margin=4)))
        runs[size] = _steps_by_hand(_model("delta_net"), method, batch)
    whole, split = runs[None], runs[1]
    assert [parts for *_, parts in whole] == [1, 1] and [parts for *_, parts in split] == [4, 1]
    for (l_w, m_w, g_w, _), (l_s, m_s, g_s, _) in zip(whole, split, strict=True):
        assert l_s == pytest.approx(l_w, rel=1e-6)
        assert m_s.keys() == m_w.keys()
        scale = max(float(g.abs().max()) for g in g_w.values())
        for name in g_w:
            torch.testing.assert_close(g_s[name], g_w[name], rtol=1e-5, atol=1e-6 * scale, msg=name)
    assert "inner_reward" in whole[0][1] and "answer_ntp_loss" in whole[1][1]


def test_ttt_adapt_steps_once_per_mini_batch_with_micro_batches():
    from refine.train.ttt import adapt, ttt_optimizer

    batch = _collate(_rows(4))
    results = {}
    for size in (None, 1):
        model = _model("delta_net")
        metrics = []
        torch.manual_seed(3)
        taken = adapt(model, RefineMethod(_cfg(mini_batch_size=None, micro_batch_size=size, reward="exact")),
                      batch, 1, ttt_optimizer(model, 1e-3, 0.0), 2, metrics)  # fmt: skip
        results[size] = taken, model
    assert results[None][0] == results[1][0] == 2  # 4 rows / TTT mini-batch 2
    for (name, p), q in zip(results[None][1].named_parameters(), results[1][1].parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-6, msg=name)


def test_micro_batch_size_is_checked():
    with pytest.raises(ValueError, match="micro_batch_size must be an integer >= 1"):
        RefineConfig(micro_batch_size=0)


def test_ntp_grad_accum_covers_the_sequences_of_one_big_batch(tmp_path):
    """NTP-SFT at paper size: batch_size b x grad_accum a takes, per optimizer step, the rows that
    one batch of a*b takes (the loop's batches are consecutive slices of one seeded permutation),
    and with full-length rows (equal token counts; the paper's 16K documents) reaches its weights,
    over several steps and an epoch boundary."""
    from refine.train.loop import iterate_batches

    dataset = _rows(24, seed=5)
    big = iterate_batches(dataset, 8, seed=0)
    small = iterate_batches(dataset, 2, seed=0)
    for _ in range(6):  # two epochs of 3 steps
        rows = next(big)["input_ids"]
        assert torch.equal(torch.cat([next(small)["input_ids"] for _ in range(4)]), rows)
    models = {}
    for batch_size, accum in ((8, 1), (2, 4)):
        cfg = TrainConfig(lr=1e-3, max_steps=4, batch_size=batch_size, grad_accum=accum, checkpoint_every=10,
                          log_every=1, bf16=False)  # fmt: skip
        models[accum] = _model("delta_net")
        train(models[accum], NTPMethod(), dataset, cfg, tmp_path / str(accum), NullTracker())
    for (name, p), q in zip(models[1].named_parameters(), models[4].parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-6, msg=name)


def test_refine_with_gradient_checkpointing_is_refused_naming_the_remedy(tmp_path):
    """Checkpointed layers keep no cache, so the REFINE states cannot come out of the grad forward
    (fla's DeltaNet then fails deep inside with a TypeError): the loop refuses it up front."""
    cfg = TrainConfig(lr=1e-3, max_steps=1, batch_size=4, gradient_checkpointing=True, bf16=False)
    with pytest.raises(ValueError, match="micro_batch_size"):
        train(_model("delta_net"), RefineMethod(_cfg()), _rows(4), cfg, tmp_path, NullTracker())
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        train(_model("delta_net"), NestedMethod(RefineMethod(_cfg())), _rows(4), cfg, tmp_path, NullTracker())
