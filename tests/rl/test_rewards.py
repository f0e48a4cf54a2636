"""Rollout rewards (refine/rl/rewards.py)."""

import pytest
import torch

from refine.rl.rewards import REWARDS, get_reward, register_reward

TRUE_TOKENS = torch.tensor([[4, 5, 6, 7, 8]])
PRED_TOKENS = torch.tensor([[4, 0, 6, 7, 1]])  # 3 of 5 match


def _hidden(signs):
    """[1, k, 3] hidden states: row i is signs[i] * (1, 2, 2)."""
    base = torch.tensor([1.0, 2.0, 2.0])
    return torch.stack([s * base for s in signs]).unsqueeze(0)


def test_registry_has_the_three_rewards():
    assert {"cosine", "exact", "hybrid"} <= set(REWARDS)


def test_cosine_identical_is_one_opposite_is_minus_one():
    h = torch.randn(2, 5, 7)
    cosine = get_reward("cosine")
    torch.testing.assert_close(
        cosine(TRUE_TOKENS.expand(2, 5), TRUE_TOKENS.expand(2, 5), h, h), torch.ones(2)
    )
    torch.testing.assert_close(cosine(PRED_TOKENS, TRUE_TOKENS, -h[:1], h[:1]), -torch.ones(1))


def test_cosine_is_mean_over_positions_and_scale_free():
    true = _hidden([1, 1, 1, 1, 1])
    pred = _hidden([3, -1, 2, 0.5, -4])  # cos: 1, -1, 1, 1, -1 -> mean 0.2
    out = get_reward("cosine")(PRED_TOKENS, TRUE_TOKENS, pred, true)
    torch.testing.assert_close(out, torch.tensor([0.2]))


def test_cosine_orthogonal_is_zero():
    true = torch.tensor([[[1.0, 0.0]]])
    pred = torch.tensor([[[0.0, 5.0]]])
    out = get_reward("cosine")(torch.tensor([[1]]), torch.tensor([[1]]), pred, true)
    torch.testing.assert_close(out, torch.zeros(1))


def test_exact_is_a_match_rate():
    h = torch.randn(1, 5, 3)
    torch.testing.assert_close(get_reward("exact")(PRED_TOKENS, TRUE_TOKENS, h, h), torch.tensor([0.6]))


def test_hybrid_by_hand_and_range():
    true = _hidden([1, 1, 1, 1, 1])
    pred = _hidden([3, -1, 2, 0.5, -4])  # cos 1, -1, 1, 1, -1; match 1, 0, 1, 1, 0
    out = get_reward("hybrid")(PRED_TOKENS, TRUE_TOKENS, pred, true)
    torch.testing.assert_close(out, torch.tensor([(2 - 1 + 2 + 2 - 1) / 5]))
    h = torch.randn(1, 5, 3)
    best = get_reward("hybrid")(TRUE_TOKENS, TRUE_TOKENS, h, h)
    worst = get_reward("hybrid")(PRED_TOKENS + 100, TRUE_TOKENS, -h, h)
    torch.testing.assert_close(best, torch.tensor([2.0]))
    torch.testing.assert_close(worst, torch.tensor([-1.0]))


def test_rewards_are_fp32_without_grad():
    pred = torch.randn(4, 5, 8, dtype=torch.bfloat16, requires_grad=True)
    true = torch.randn(4, 5, 8, dtype=torch.bfloat16)
    for name in ("cosine", "exact", "hybrid"):
        out = get_reward(name)(TRUE_TOKENS.expand(4, 5), TRUE_TOKENS.expand(4, 5), pred, true)
        assert out.shape == (4,) and out.dtype == torch.float32 and not out.requires_grad


def test_mismatched_shapes_raise():
    h = torch.randn(1, 5, 3)
    with pytest.raises(ValueError, match="tokens"):
        get_reward("exact")(PRED_TOKENS, TRUE_TOKENS[:, :1], h, h)
    with pytest.raises(ValueError, match="hidden"):
        get_reward("cosine")(PRED_TOKENS, TRUE_TOKENS, h, h[:, :4])


def test_unknown_reward_lists_known_names_and_new_reward_is_one_function():
    with pytest.raises(ValueError, match="cosine.*exact.*hybrid"):
        get_reward("bleu")

    @register_reward("first_token_match_test")
    def first_token(pred_tokens, true_tokens, pred_hidden, true_hidden):
        return (pred_tokens[:, 0] == true_tokens[:, 0]).float()

    h = torch.randn(1, 5, 3)
    try:
        assert get_reward("first_token_match_test")(PRED_TOKENS, TRUE_TOKENS, h, h).tolist() == [1.0]
        with pytest.raises(ValueError, match="already registered"):
            register_reward("first_token_match_test")(first_token)
    finally:
        del REWARDS["first_token_match_test"]
