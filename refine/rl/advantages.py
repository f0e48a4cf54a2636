"""Group-relative advantages of the rollouts, and the reward statistics logged with them.

REFINE.md §1 step 5. A group is always the LAST dim of `rewards`:
    n = 1: rewards [B, c]     group = the c rollouts of one sequence (one per position)
    n > 1: rewards [B, c, n]  group = the n rollouts of one prefix
The trainer arranges the tensor, these functions never guess. Advantages have the shape of
`rewards`; the trainer broadcasts each one to its k rollout tokens.

Estimators (a `refine.registry.Registry`; each is `fn(rewards [..., G], norm_by_std, eps) -> [..., G]`):
    grpo  A_i = (r_i - mean(r)) / (std(r) + eps)            (REFINE's choice)
    rloo  A_i = (r_i - mean_{j != i} r_j) / (std(r) + eps)   leave-one-out baseline: the own
          reward does not enter its baseline; equals grpo times G / (G - 1)
With norm_by_std=False the division is skipped (Dr. GRPO). std is torch.std, i.e. UNBIASED
(divides by G - 1), as in verl's compute_grpo_outcome_advantage; eps = 1e-6 is added to the
std, not to the variance, as there.

Deviations from the paper / the authors' code (verl):
- A group of one member gets advantage 0. verl sets mean 0 and std 1 for such a group, so its
  advantage is the raw reward; a lone rollout has no group to be compared with, and a raw
  reward (cosine rewards are mostly positive) would push every sampled continuation up. The
  config rejects settings that produce one-member groups.
- A group whose rewards are all equal gets exactly 0. In fp32 the group mean of equal rewards
  is not always exact (8 x 0.7 averages to 0.7 + ~6e-8), and verl's division by (0 + 1e-6)
  turns that rounding residual into advantages of ~0.06 with an arbitrary sign.
- Groups are a tensor dim rather than verl's uid index array: REFINE's groups are regular.

`reward_stats` uses TRL's flat metric names: `reward` (mean), `reward_std` (mean over groups
of the group's std, as TRL logs it), `frac_reward_zero_std` (groups whose rewards are all
equal, hence zero advantage and zero policy gradient; one-member groups count), and
`advantage_mean/std/min/max`.
"""

from collections.abc import Callable

import torch

from refine.registry import Registry

AdvantageFn = Callable[[torch.Tensor, bool, float], torch.Tensor]
ADVANTAGE_ESTIMATORS: Registry[AdvantageFn] = Registry("advantage estimator", key="advantage")


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register `fn(rewards [..., G], norm_by_std, eps) -> advantages [..., G]`."""
    return ADVANTAGE_ESTIMATORS.register(name)


def get_advantage(name: str) -> AdvantageFn:
    """The advantage estimator called `name`; ValueError naming the key and the known ones otherwise."""
    return ADVANTAGE_ESTIMATORS[name]


def _zero_constant_groups(advantages: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """Exactly 0 for groups whose rewards are all equal: [..., G] -> [..., G].

    Without this, fp32 rounding of the group mean (8 x 0.7 does not average to 0.7) leaves a
    residual of ~1e-8 that the division by (0 + eps) blows up to ~0.06.
    """
    constant = rewards.amax(dim=-1, keepdim=True) == rewards.amin(dim=-1, keepdim=True)  # [..., 1]
    return advantages.masked_fill(constant, 0.0)


def _group_std(rewards: torch.Tensor) -> torch.Tensor:
    """Unbiased std over the last dim, 0 for one-member groups: [..., G] -> [..., 1] (fp32)."""
    if rewards.shape[-1] < 2:
        return torch.zeros_like(rewards[..., :1])
    return rewards.std(dim=-1, keepdim=True)


@register_advantage("grpo")
def group_advantages(rewards: torch.Tensor, norm_by_std: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages over the last dim: rewards [..., G] -> fp32 [..., G] (zeros when G = 1)."""
    r = rewards.detach().float()
    if r.shape[-1] < 2:
        return torch.zeros_like(r)
    centred = r - r.mean(dim=-1, keepdim=True)
    advantages = centred / (_group_std(r) + eps) if norm_by_std else centred
    return _zero_constant_groups(advantages, r)


@register_advantage("rloo")
def leave_one_out_advantages(
    rewards: torch.Tensor, norm_by_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Leave-one-out baseline over the last dim: rewards [..., G] -> fp32 [..., G] (zeros when G = 1)."""
    r = rewards.detach().float()
    size = r.shape[-1]
    if size < 2:
        return torch.zeros_like(r)
    others_mean = (r.sum(dim=-1, keepdim=True) - r) / (size - 1)
    centred = r - others_mean
    advantages = centred / (_group_std(r) + eps) if norm_by_std else centred
    return _zero_constant_groups(advantages, r)


REWARD_STAT_NAMES = (
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "advantage_mean",
    "advantage_std",
    "advantage_min",
    "advantage_max",
)


def reward_stats(rewards: torch.Tensor, advantages: torch.Tensor) -> dict[str, float]:
    """TRL-style flat metrics of one batch: rewards and advantages [..., G] -> {name: float}."""
    r = rewards.detach().float()
    a = advantages.detach().float()
    group_std = _group_std(r).squeeze(-1)  # [...], one per group
    zero_std = torch.isclose(group_std, torch.zeros_like(group_std))
    values = torch.stack(
        [
            r.mean(),
            group_std.mean(),
            zero_std.float().mean(),
            a.mean(),
            a.std() if a.numel() > 1 else a.new_zeros(()),
            a.min(),
            a.max(),
        ]
    ).tolist()  # one device sync for all seven
    return dict(zip(REWARD_STAT_NAMES, values, strict=True))
