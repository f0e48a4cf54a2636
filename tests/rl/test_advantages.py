"""Group advantages and reward statistics (refine/rl/advantages.py)."""

import math

import pytest
import torch

from refine.rl.advantages import ADVANTAGE_ESTIMATORS, get_advantage, group_advantages, reward_stats

EPS = 1e-6


def test_sequence_groups_n1_by_hand():
    # [B=2, c=4]: each row is one group (the c positions of one sequence)
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]])
    std = math.sqrt(5.0 / 3.0)  # unbiased: squared deviations 2.25 + 0.25 + 0.25 + 2.25 over 3
    expected = torch.tensor([[-1.5, -0.5, 0.5, 1.5], [0.0, 0.0, 0.0, 0.0]])
    expected[0] /= std + EPS
    torch.testing.assert_close(group_advantages(rewards), expected)


def test_prefix_groups_n_gt_1_by_hand():
    # [B=1, c=2, n=3]: groups are the n rollouts of one prefix, not the positions
    rewards = torch.tensor([[[0.0, 1.0, 1.0], [5.0, 5.0, 8.0]]])
    s1 = math.sqrt(1.0 / 3.0)  # deviations -2/3, 1/3, 1/3 -> (4 + 1 + 1) / 9 / 2
    s2 = math.sqrt(3.0)  # mean 6, deviations -1, -1, 2 -> (1 + 1 + 4) / 2
    expected = torch.tensor([[[-2 / 3, 1 / 3, 1 / 3], [-1.0, -1.0, 2.0]]])
    expected[0, 0] /= s1 + EPS
    expected[0, 1] /= s2 + EPS
    torch.testing.assert_close(group_advantages(rewards), expected)


def test_group_members_do_not_mix():
    rewards = torch.rand(3, 4, 5)
    full = group_advantages(rewards)
    torch.testing.assert_close(full[1, 2], group_advantages(rewards[1, 2]))
    torch.testing.assert_close(full.mean(-1), torch.zeros(3, 4), atol=1e-6, rtol=0)


def test_equal_rewards_and_single_member_groups_give_zero():
    # 8 x 0.7 does not average to 0.7 in fp32: the rounding residual must not become advantage
    assert torch.equal(group_advantages(torch.full((2, 8), 0.7)), torch.zeros(2, 8))
    assert torch.equal(get_advantage("rloo")(torch.full((2, 8), 0.7), True, EPS), torch.zeros(2, 8))
    assert torch.equal(group_advantages(torch.tensor([[0.3], [0.9]])), torch.zeros(2, 1))
    assert torch.equal(get_advantage("rloo")(torch.tensor([[0.3]]), True, EPS), torch.zeros(1, 1))


def test_without_std_normalisation_only_centres():
    rewards = torch.tensor([[1.0, 2.0, 6.0]])
    torch.testing.assert_close(
        group_advantages(rewards, norm_by_std=False), torch.tensor([[-2.0, -1.0, 3.0]])
    )


def test_rloo_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    rloo = get_advantage("rloo")
    # r_i minus the mean of the other three: 1 - 3, 2 - 8/3, 3 - 7/3, 4 - 2
    centred = torch.tensor([[-2.0, -2 / 3, 2 / 3, 2.0]])
    torch.testing.assert_close(rloo(rewards, False, EPS), centred)
    torch.testing.assert_close(rloo(rewards, True, EPS), centred / (math.sqrt(5 / 3) + EPS))


def test_advantages_are_fp32_and_detached():
    rewards = torch.rand(2, 4, dtype=torch.bfloat16, requires_grad=True)
    out = group_advantages(rewards)
    assert out.dtype == torch.float32 and not out.requires_grad


def test_registry_and_unknown_name():
    assert ADVANTAGE_ESTIMATORS["grpo"] is group_advantages
    with pytest.raises(ValueError, match="grpo.*rloo"):
        get_advantage("gae")


def test_reward_stats_by_hand():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # group stds 0 and sqrt(2)
    adv = group_advantages(rewards)  # [0, 0], [-1, 1] / (sqrt 2 + eps)
    stats = reward_stats(rewards, adv)
    a = 1 / (math.sqrt(2) + EPS)
    expected = {
        "reward": 1.0,
        "reward_std": math.sqrt(2) / 2,
        "frac_reward_zero_std": 0.5,
        "advantage_mean": 0.0,
        "advantage_std": math.sqrt(2 * a * a / 3),
        "advantage_min": -a,
        "advantage_max": a,
    }
    assert stats.keys() == expected.keys()
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, abs=1e-6), key
        assert isinstance(stats[key], float)


def test_reward_stats_one_member_groups_count_as_zero_std():
    rewards = torch.tensor([[0.2], [0.8]])
    stats = reward_stats(rewards, group_advantages(rewards))
    assert stats["frac_reward_zero_std"] == 1.0 and stats["reward_std"] == 0.0
    assert stats["reward"] == pytest.approx(0.5)
