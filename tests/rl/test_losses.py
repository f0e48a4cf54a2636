"""PPO policy loss, NTP loss and their combination (refine/rl/losses.py), and the RefineConfig
that sets their weights and clips (refine/rl/config.py)."""

import math

import pytest
import torch

from refine.rl.advantages import group_advantages
from refine.rl.config import RefineConfig
from refine.rl.losses import combined_loss, ntp_loss, ppo_policy_loss


def _on_policy_inputs(n=6, k=5):
    logp = (torch.randn(n, k) - 2.0).requires_grad_()
    mask = torch.rand(n, k) > 0.3
    mask[0] = True
    return logp, logp.detach().clone(), torch.randn(n), mask


def test_first_on_policy_pass_is_minus_mean_advantage():
    logp, old, adv, mask = _on_policy_inputs()
    loss, metrics = ppo_policy_loss(logp, old, adv, mask)
    per_token_adv = adv[:, None].expand_as(mask)
    expected = -per_token_adv[mask].mean()
    torch.testing.assert_close(loss, expected)
    assert metrics["clip_frac"].item() == 0.0 and metrics["clip_frac_dual"].item() == 0.0
    assert metrics["ratio_mean"].item() == 1.0 and metrics["approx_kl"].item() == 0.0
    loss.backward()
    grad_expected = torch.where(mask, -per_token_adv / mask.sum(), torch.zeros(()))
    torch.testing.assert_close(logp.grad, grad_expected)


def test_equal_rewards_give_zero_policy_gradient():
    logp, old, _, mask = _on_policy_inputs(n=8)
    adv = group_advantages(torch.full((1, 8), 0.35)).view(8)
    loss, _ = ppo_policy_loss(logp, old, adv, mask)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logp.grad, torch.zeros_like(logp))


def test_clip_and_dual_clip_by_hand():
    ratios = torch.tensor([1.5, 0.5, 1.5, 0.5, 5.0])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0])
    old = torch.full((5, 1), -2.0)
    logp = (old + ratios.log()[:, None]).requires_grad_()
    loss, metrics = ppo_policy_loss(logp, old, adv, torch.ones(5, 1, dtype=torch.bool))
    # per token: clipped -1.2 | unclipped -0.5 | unclipped 1.5 | clipped 0.8 | dual-clipped 3.0
    torch.testing.assert_close(loss, torch.tensor((-1.2 - 0.5 + 1.5 + 0.8 + 3.0) / 5))
    torch.testing.assert_close(metrics["clip_frac"], torch.tensor(2 / 5))
    torch.testing.assert_close(metrics["clip_frac_dual"], torch.tensor(1 / 5))
    torch.testing.assert_close(metrics["ratio_mean"], torch.tensor(9.0 / 5))
    torch.testing.assert_close(metrics["approx_kl"], -ratios.log().mean())
    loss.backward()
    # d(-A r)/d logp = -A r / T where unclipped; 0 where a clip holds the loss constant
    torch.testing.assert_close(logp.grad.view(5), torch.tensor([0.0, -0.5, 1.5, 0.0, 0.0]) / 5)


def test_asymmetric_clip_high():
    old = torch.zeros(1, 1)
    logp = old + math.log(1.25)
    loss_sym, m_sym = ppo_policy_loss(logp, old, torch.ones(1), torch.ones(1, 1, dtype=torch.bool))
    loss_hi, m_hi = ppo_policy_loss(
        logp, old, torch.ones(1), torch.ones(1, 1, dtype=torch.bool), clip_high=0.28
    )
    torch.testing.assert_close(loss_sym, torch.tensor(-1.2))
    torch.testing.assert_close(loss_hi, torch.tensor(-1.25))
    assert m_sym["clip_frac"].item() == 1.0 and m_hi["clip_frac"].item() == 0.0


def test_masked_tokens_change_nothing():
    torch.manual_seed(1)
    n, k = 4, 5
    base_logp = torch.randn(n, k) - 2.0
    old = base_logp + 0.3 * torch.randn(n, k)
    adv = torch.randn(n, k)
    mask = torch.rand(n, k) > 0.4
    mask[0, 0] = True

    def run(logp_values, old_values, adv_values):
        logp = logp_values.clone().requires_grad_()
        loss, metrics = ppo_policy_loss(logp, old_values, adv_values, mask)
        loss.backward()
        return loss, metrics, logp.grad

    ref = run(base_logp, old, adv)
    garbage = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e6, -1e6])
    fill = garbage.repeat(n * k // 5 + 1)[: n * k].view(n, k)
    poked = run(
        torch.where(mask, base_logp, fill), torch.where(mask, old, fill.flip(0)), torch.where(mask, adv, fill)
    )
    torch.testing.assert_close(poked[0], ref[0])
    torch.testing.assert_close(poked[2], ref[2])
    for key in ref[1]:
        torch.testing.assert_close(poked[1][key], ref[1][key])
    assert (ref[2][~mask] == 0).all() and (ref[2][mask] != 0).any()


def test_num_tokens_makes_parts_sum_to_the_whole():
    torch.manual_seed(2)
    logp = (torch.randn(6, 5) - 2.0).requires_grad_()
    old = logp.detach() + 0.2 * torch.randn(6, 5)
    adv, mask = torch.randn(6), torch.rand(6, 5) > 0.3
    full, _ = ppo_policy_loss(logp, old, adv, mask)
    (full_grad,) = torch.autograd.grad(full, logp)
    total = mask.sum()
    parts = [
        ppo_policy_loss(logp[s], old[s], adv[s], mask[s], num_tokens=total)[0]
        for s in (slice(0, 2), slice(2, 6))
    ]
    (part_grad,) = torch.autograd.grad(parts[0] + parts[1], logp)
    torch.testing.assert_close(parts[0] + parts[1], full)
    torch.testing.assert_close(part_grad, full_grad)


@pytest.mark.parametrize("dual_clip", [1.0, 0.5])
def test_dual_clip_must_exceed_one(dual_clip):
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_policy_loss(
            torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), dual_clip=dual_clip
        )


def test_ntp_loss_uniform_is_log_vocab_and_ignores_minus_100():
    logits = torch.zeros(2, 4, 7)
    labels = torch.tensor([[0, 1, 2, 3], [4, 5, -100, -100]])
    torch.testing.assert_close(ntp_loss(logits, labels), torch.tensor(math.log(7)))


def test_ntp_loss_shift_and_hand_value():
    # logits at t strongly predict labels[t + 1]; only position 1 is unsure (p = 0.5 on the target)
    labels = torch.tensor([[3, 1, 2, 0]])
    logits = torch.full((1, 4, 4), -30.0)
    logits[0, 0, 1] = 30.0
    logits[0, 1, 2] = 0.0
    logits[0, 1, 3] = 0.0
    logits[0, 2, 0] = 30.0
    logits[0, 3, 3] = 30.0  # the last position predicts nothing
    torch.testing.assert_close(ntp_loss(logits, labels), torch.tensor(math.log(2) / 3), atol=1e-5, rtol=0)
    labels_ignored = labels.clone()
    labels_ignored[0, 2] = -100
    torch.testing.assert_close(ntp_loss(logits, labels_ignored), torch.tensor(0.0), atol=1e-5, rtol=0)


def test_ntp_loss_all_ignored_is_zero_and_bf16_runs_in_fp32():
    logits = torch.randn(1, 3, 5, dtype=torch.bfloat16, requires_grad=True)
    loss = ntp_loss(logits, torch.full((1, 3), -100))
    assert loss.item() == 0.0 and loss.dtype == torch.float32
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits.grad))


def test_combined_loss():
    a, b = torch.tensor(2.0), torch.tensor(-1.0)
    torch.testing.assert_close(combined_loss(a, b, 1.0, 0.2), torch.tensor(1.8))
    torch.testing.assert_close(combined_loss(a, None, 1.0, 0.0), torch.tensor(2.0))
    torch.testing.assert_close(combined_loss(a, torch.tensor(float("nan")), 1.0, 0.0), torch.tensor(2.0))
    with pytest.raises(ValueError, match="l_pg"):
        combined_loss(a, None, 1.0, 0.2)
    with pytest.raises(ValueError, match="both 0"):
        combined_loss(a, b, 0.0, 0.0)


# RefineConfig ---------------------------------------------------------------------------------


def test_defaults_are_the_authors():
    cfg = RefineConfig()
    assert (cfg.num_positions, cfg.rollout_len, cfg.num_rollouts) == (8, 5, 1)
    assert (cfg.temperature, cfg.top_p, cfg.top_k) == (1.0, 1.0, 0)
    assert (cfg.selection, cfg.reward, cfg.advantage, cfg.margin) == ("entropy", "cosine", "grpo", 20)
    assert (cfg.lambda_ntp, cfg.lambda_pg, cfg.clip, cfg.dual_clip) == (1.0, 0.2, 0.2, 3.0)
    assert cfg.norm_adv_by_std and cfg.ppo_epochs == 1 and cfg.mini_batch_size is None
    assert cfg.grouping == "sequence" and cfg.window == 5


def test_auto_grouping_and_window():
    assert RefineConfig(num_rollouts=4).grouping == "prefix"
    assert RefineConfig(num_rollouts=4, group="prefix").grouping == "prefix"
    assert RefineConfig(smoothing_width=9).window == 9


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"rollout_len": 0}, "rollout_len"),
        ({"num_positions": 0}, "num_positions"),
        ({"num_rollouts": 0}, "num_rollouts"),
        ({"lambda_ntp": -0.1}, "lambda_ntp"),
        ({"lambda_pg": -1.0}, "lambda_pg"),
        ({"lambda_ntp": 0.0, "lambda_pg": 0.0}, "lambda_ntp and lambda_pg"),
        ({"num_rollouts": 4, "group": "sequence"}, "group='sequence'"),
        ({"group": "prefix"}, "group='prefix'"),
        ({"group": "batch"}, "group must be one of"),
        ({"num_positions": 1}, "num_positions=1"),
        ({"num_rollouts": 4, "temperature": 0.0}, "temperature=0"),
        ({"selection": "topk"}, "selection must be one of .*'argmax'.*'entropy'"),
        ({"reward": "bleu"}, "reward must be one of .*'cosine'.*'exact'.*'hybrid'"),
        ({"advantage": "gae"}, "advantage must be one of .*'grpo'"),
        ({"dual_clip": 1.0}, "dual_clip"),
        ({"clip": 0.0}, "clip"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"temperature": -0.5}, "temperature"),
        ({"smoothing_width": 0}, "smoothing_width"),
        ({"margin": -1}, "margin"),
        ({"mini_batch_size": 0}, "mini_batch_size"),
        ({"ppo_epochs": 0}, "ppo_epochs"),
        ({"rollout_len": 2.5}, "rollout_len"),
    ],
)
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        RefineConfig(**kwargs)


def test_degenerate_groups_allowed_without_policy_loss():
    RefineConfig(num_positions=1, lambda_pg=0.0)
    RefineConfig(num_rollouts=4, temperature=0.0, lambda_pg=0.0)
    RefineConfig(temperature=0.0)  # greedy with sequence groups: positions still differ


def test_validate_for_length():
    cfg = RefineConfig()  # s in [20, L - 20]: L - 39 starts, need 8
    cfg.validate_for_length(47)
    with pytest.raises(ValueError, match="num_positions=8.*margin=20.*rollout_len=5"):
        cfg.validate_for_length(46)
    with pytest.raises(ValueError, match="rollout_len=5"):
        RefineConfig(margin=0, num_positions=1, lambda_pg=0.0).validate_for_length(5)
    RefineConfig(margin=0, rollout_len=3, num_positions=2).validate_for_length(5)  # s in {1, 2}


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_chunked_ntp_loss_equals_unchunked_with_gradients(chunk):
    logits = torch.randn(3, 13, 17, requires_grad=True)
    labels = torch.randint(0, 17, (3, 13))
    labels[0, 3:6] = -100
    full = ntp_loss(logits, labels)
    (g_full,) = torch.autograd.grad(full, logits)
    part = ntp_loss(logits, labels, chunk=chunk)
    (g_part,) = torch.autograd.grad(part, logits)
    torch.testing.assert_close(part, full)
    torch.testing.assert_close(g_part, g_full)
