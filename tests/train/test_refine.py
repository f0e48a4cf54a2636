"""The REFINE update: one-pass == re-encoding reference; on-policy ratio 1; it trains."""

import pytest
import torch

from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.train.refine import RefineMethod

VOCAB = 53


def _setup(arch="delta_net", seq_len=96, bsz=4):
    torch.manual_seed(0)
    overrides = {"hidden_size": 64, "num_hidden_layers": 2}
    if arch == "lact":
        overrides.update(window_size=16, lact_chunk_size=16)
    else:
        overrides.update(num_heads=2)
    model = build_model(arch, VOCAB, overrides)
    x = torch.randint(0, VOCAB, (bsz, seq_len))
    batch = {"input_ids": x, "labels": x.clone(), "attention_mask": torch.ones_like(x)}
    return model, batch


def _run(model, batch, cfg, mode, seed=1):
    torch.manual_seed(seed)
    method = RefineMethod(cfg, mode)
    model.zero_grad()
    results = []
    for loss, metrics in method.updates(model, batch):
        loss.backward()
        results.append((loss.detach(), metrics))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return results, grads


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
@pytest.mark.parametrize("num_rollouts", [1, 2])
def test_onepass_equals_reencode_reference(arch, num_rollouts):
    model, batch = _setup(arch)
    cfg = RefineConfig(num_positions=3, rollout_len=4, num_rollouts=num_rollouts, margin=8, reward="hybrid")
    fast, g_fast = _run(model, batch, cfg, "onepass")
    slow, g_slow = _run(model, batch, cfg, "reencode")
    (l_fast, m_fast), (l_slow, m_slow) = fast[0], slow[0]
    torch.testing.assert_close(l_fast, l_slow, atol=1e-5, rtol=1e-5)
    for key in ("reward", "reward_std", "rollout_exact", "rollout_cosine", "entropy_selected", "ntp_loss"):
        assert m_fast[key] == pytest.approx(m_slow[key], abs=1e-5), key
    assert g_fast.keys() == g_slow.keys()
    global_scale = max(float(g.abs().max()) for g in g_slow.values())
    for name in g_slow:
        torch.testing.assert_close(g_fast[name], g_slow[name], rtol=1e-3, atol=1e-4 * global_scale, msg=name)


@pytest.mark.parametrize("mode", ["onepass", "reencode"])
def test_first_ratio_is_one_and_minibatches_make_steps(mode):
    """On-policy, the log-prob of every rollout token recorded when it was sampled equals the one
    the update's teacher-forced forward computes (`rollout_logp_abs_diff`: their mean absolute
    difference). The PPO ratio itself is 1 by construction (old log-probs are the detached
    teacher-forced ones, verl's recompute), so only this comparison can catch a mismatch between the
    rollout and the update; `test_rollout_logp_check_fails_on_a_broken_update` shows it does."""
    model, batch = _setup()
    cfg = RefineConfig(num_positions=4, rollout_len=5, margin=8, mini_batch_size=2, temperature=0.7)
    results, _ = _run(model, batch, cfg, mode)
    assert len(results) == 2  # 4 sequences / mini-batch 2 = 2 losses = 2 optimizer steps
    for _, metrics in results:
        assert metrics["pg_ratio_mean"] == 1.0
        assert metrics["pg_clip_frac"] == 0.0
        assert 0.0 <= metrics["frac_reward_zero_std"] <= 1.0
        assert metrics["rollout_logp_abs_diff"] < 1e-5


@pytest.mark.parametrize("broken", ["shifted_tokens", "temperature"])
def test_rollout_logp_check_fails_on_a_broken_update(monkeypatch, broken):
    """A deliberately broken teacher-forced pass (the rollout tokens off by one position, or the
    logits divided by another temperature than the sampler's) leaves the PPO ratio at exactly 1
    (why the ratio alone could not fail) but moves the teacher-forced log-probs away from the ones
    recorded at sampling."""
    import dataclasses

    model, batch = _setup()
    cfg = RefineConfig(num_positions=4, rollout_len=5, margin=8, temperature=0.7)
    method = RefineMethod(cfg)
    real = method._teacher_forced

    def shifted(model, states, first_logits, tokens):
        return real(model, states, first_logits, tokens.roll(1, dims=1))

    def other_temperature(model, states, first_logits, tokens):
        method.cfg = dataclasses.replace(cfg, temperature=1.0)
        try:
            return real(model, states, first_logits, tokens)
        finally:
            method.cfg = cfg

    monkeypatch.setattr(method, "_teacher_forced", shifted if broken == "shifted_tokens" else other_temperature)
    torch.manual_seed(1)
    (_, metrics), = [(loss, m) for loss, m in method.updates(model, batch)]
    assert metrics["pg_ratio_mean"] == 1.0
    assert metrics["rollout_logp_abs_diff"] > 1e-2


def test_policy_gradient_changes_the_update():
    """λ_pg > 0 adds a gradient beyond the NTP one (a non-degenerate reward spread)."""
    model, batch = _setup()
    cfg_pg = RefineConfig(num_positions=4, rollout_len=5, margin=8, lambda_pg=1.0)
    cfg_ntp = RefineConfig(num_positions=4, rollout_len=5, margin=8, lambda_pg=0.0)
    results, g_pg = _run(model, batch, cfg_pg, "onepass")
    m = results[0][1]
    _, g_ntp = _run(model, batch, cfg_ntp, "onepass")
    assert m["reward_std"] > 0
    diff = sum((g_pg[n] - g_ntp[n]).abs().sum() for n in g_ntp)
    assert diff > 0


def test_same_seed_same_metrics():
    model, batch = _setup()
    cfg = RefineConfig(num_positions=4, rollout_len=5, margin=8)
    a, _ = _run(model, batch, cfg, "onepass", seed=3)
    b, _ = _run(model, batch, cfg, "onepass", seed=3)
    assert a[0][1] == b[0][1]


def test_every_parameter_changes_after_one_update(tmp_path):
    from refine.tracking import NullTracker
    from refine.train.config import TrainConfig
    from refine.train.loop import train

    model, batch = _setup()
    dataset = [{k: v[i] for k, v in batch.items()} for i in range(4)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(lr=1e-2, max_steps=1, batch_size=4, checkpoint_every=1, log_every=1)
    train(model, RefineMethod(RefineConfig(num_positions=4, rollout_len=5, margin=8)), dataset, cfg,
          tmp_path, NullTracker())
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert unchanged == []


class _Trace:
    """Spies on one `RefineMethod.updates` run: the starts, the rollout tokens, the rewards and,
    with `teacher`, replaces the sampler by the true continuation of each start."""

    def __init__(self, monkeypatch, method, teacher: bool = False):
        import refine.train.refine as refine_module

        self.starts, self.tokens, self.rewards, self.table, self.step = [], [], [], None, 0
        cfg = method.cfg
        grad_forward, reward_fn = method._grad_forward, method.reward_fn

        def spy_forward(model, input_ids, starts, recorded=None):
            self.starts.append(starts.clone())
            self.table = refine_module._gather_rows(input_ids, starts, 0, cfg.rollout_len)
            self.table = self.table.repeat_interleave(cfg.num_rollouts, 0)  # [N, k] true tokens
            self.step = 0
            return grad_forward(model, input_ids, starts, recorded)

        def spy_reward(tokens, true_tokens, hidden, true_hidden):
            self.tokens.append(tokens.clone())
            rewards = reward_fn(tokens, true_tokens, hidden, true_hidden)
            self.rewards.append(rewards.detach().clone())
            return rewards

        def true_next(logits, *args, **kwargs):
            self.step += 1
            return self.table[:, self.step - 1]

        monkeypatch.setattr(method, "_grad_forward", spy_forward)
        monkeypatch.setattr(method, "reward_fn", spy_reward)
        if teacher:
            monkeypatch.setattr(refine_module, "sample_tokens", true_next)


def _run_with_steps(model, batch, method, lr=0.5, seed=1):
    """`method.updates` with an optimizer step after every loss (the loop's order); per mini-batch:
    (loss, metrics, gradients). Plain SGD: AdamW would magnify float noise in near-zero gradients
    into weight differences of ~lr."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    out = []
    for loss, metrics in method.updates(model, batch):
        optimizer.zero_grad()
        loss.backward()
        out.append((loss.detach(), metrics, {n: p.grad.clone() for n, p in model.named_parameters()}))
        optimizer.step()
    return out


def _no_recorder(monkeypatch):
    """Force the path that CUDA takes (fla's Triton kernels have no recorder): `encode_segments`."""
    import refine.models.state as state_module
    import refine.train.refine as refine_module

    monkeypatch.setattr(state_module, "can_record", lambda model: False)
    monkeypatch.setattr(refine_module, "can_record", lambda model: False)


@pytest.mark.parametrize("path", ["record", "segments"])
@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_true_continuation_scores_cosine_one_on_every_minibatch(monkeypatch, arch, path):
    """Decoding the true continuation from the state at each start reproduces h_true exactly
    (cosine reward 1, exact match 1) on every mini-batch, also after optimizer steps (h_true and
    h_pred from the same weights); h_true shifted by one position, or taken from the weights
    before the batch's first step, fails this."""
    model, batch = _setup(arch)
    if path == "segments":
        _no_recorder(monkeypatch)
    method = RefineMethod(RefineConfig(num_positions=3, rollout_len=4, margin=8, mini_batch_size=2))
    trace = _Trace(monkeypatch, method, teacher=True)
    results = _run_with_steps(model, batch, method)
    assert len(results) == 2 and len(trace.starts) == 2
    for j, (_, metrics, _) in enumerate(results):
        assert metrics["rollout_exact"] == 1.0, j
        assert metrics["rollout_cosine"] == pytest.approx(1.0, abs=1e-5), j
        assert torch.allclose(trace.rewards[j], torch.ones_like(trace.rewards[j]), atol=1e-5), j


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_segments_path_equals_record_path(monkeypatch, arch):
    """The path CUDA takes (`encode_segments`: no state recorder) gives the record path's positions,
    rollouts, rewards, losses and gradients, over 2 mini-batches with an optimizer step between
    (float64, so that equal random draws follow from equal probabilities). Tolerance: 1e-9 for
    DeltaNet; 1e-5 for LaCT, which computes its rotary angles and per-token learning rates in
    float32 whatever the model's dtype."""
    tol = 1e-9 if arch == "delta_net" else 1e-5
    cfg = RefineConfig(num_positions=3, rollout_len=4, margin=8, reward="hybrid", mini_batch_size=2)
    runs = {}
    for path in ("record", "segments"):
        model, batch = _setup(arch)
        model.double()
        with monkeypatch.context() as patch:
            if path == "segments":
                _no_recorder(patch)
            method = RefineMethod(cfg)
            trace = _Trace(patch, method)
            runs[path] = trace, _run_with_steps(model, batch, method)
    (rec, rec_out), (seg, seg_out) = runs["record"], runs["segments"]
    assert len(rec_out) == len(seg_out) == 2
    for j in range(2):
        assert torch.equal(rec.starts[j], seg.starts[j]), j
        assert torch.equal(rec.tokens[j], seg.tokens[j]), j
        torch.testing.assert_close(rec.rewards[j], seg.rewards[j], rtol=tol, atol=tol)
        (l_rec, m_rec, g_rec), (l_seg, m_seg, g_seg) = rec_out[j], seg_out[j]
        torch.testing.assert_close(l_rec, l_seg, rtol=tol, atol=tol)
        assert m_rec["reward_std"] > 0  # a non-degenerate policy-gradient term
        for key in ("ntp_loss", "pg_loss", "rollout_cosine", "entropy_selected"):
            assert m_rec[key] == pytest.approx(m_seg[key], rel=tol, abs=tol), key
        scale = max(float(g.abs().max()) for g in g_rec.values())
        for name in g_rec:
            torch.testing.assert_close(g_rec[name], g_seg[name], rtol=tol, atol=tol * scale, msg=name)
