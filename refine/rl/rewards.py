"""Rewards of the next-sequence rollouts: one scalar per rollout against the true continuation.

REFINE.md §1 step 4. Every reward has the same signature
    reward(pred_tokens [N, k], true_tokens [N, k], pred_hidden [N, k, D], true_hidden [N, k, D]) -> [N]
where N counts rollouts (B * c * n flattened), pred_* describe the k sampled tokens and true_*
the k tokens x[s_j : s_j + k] of the data. Hidden states are final-norm outputs (the LM-head
input) of the same pre-update model. Rewards are computed in fp32 and carry no gradient.

    cosine  mean_i cos(h_pred_i, h_true_i)                in [-1, 1]
    exact   mean_i 1[y_pred_i == x_i]   (a rate)           in [0, 1]
    hybrid  mean_i (cos_i + exact_i)                       in [-1, 2]

A new reward is one function decorated with `@register_reward("name")` (an entry of the
`REWARDS` registry, `refine.registry`); `get_reward(name)` finds it and names the key and the
known rewards when it does not. The config (`RefineConfig.reward`) accepts every registered name.

Deviations from the paper / the authors' code: none known. Cosine uses torch's
`cosine_similarity` (each norm clamped at 1e-8), so an all-zero hidden state scores 0.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from refine.registry import Registry

RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
REWARDS: Registry[RewardFn] = Registry("reward")


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: register a reward under `name`; the registered version checks shapes, runs in no_grad."""

    def decorate(fn: RewardFn) -> RewardFn:
        @torch.no_grad()
        def checked(pred_tokens, true_tokens, pred_hidden, true_hidden):
            _check_shapes(pred_tokens, true_tokens, pred_hidden, true_hidden)
            return fn(pred_tokens, true_tokens, pred_hidden, true_hidden)

        REWARDS.add(name, checked)
        return fn

    return decorate


def _check_shapes(pred_tokens, true_tokens, pred_hidden, true_hidden) -> None:
    """Tokens [N, k] and hidden states [N, k, D] must agree exactly (no silent broadcasting)."""
    if pred_tokens.dim() != 2 or pred_tokens.shape != true_tokens.shape:
        raise ValueError(
            f"tokens must both be [N, k]: {tuple(pred_tokens.shape)} vs {tuple(true_tokens.shape)}"
        )
    if pred_hidden.shape != true_hidden.shape or pred_hidden.shape[:2] != pred_tokens.shape:
        raise ValueError(
            f"hidden states must both be [N, k, D] with [N, k] = {tuple(pred_tokens.shape)}: "
            f"{tuple(pred_hidden.shape)} vs {tuple(true_hidden.shape)}"
        )


def get_reward(name: str) -> RewardFn:
    """The reward function called `name`; ValueError naming the key and the known rewards otherwise."""
    return REWARDS[name]


def per_token_cosine(pred_hidden: torch.Tensor, true_hidden: torch.Tensor) -> torch.Tensor:
    """cos(h_pred_i, h_true_i) in fp32: [N, k, D] x2 -> [N, k]."""
    return F.cosine_similarity(pred_hidden.float(), true_hidden.float(), dim=-1)


def per_token_match(pred_tokens: torch.Tensor, true_tokens: torch.Tensor) -> torch.Tensor:
    """1[y_pred_i == x_i] as fp32: [N, k] x2 -> [N, k]."""
    return (pred_tokens == true_tokens).float()


@register_reward("cosine")
def cosine_reward(pred_tokens, true_tokens, pred_hidden, true_hidden):
    return per_token_cosine(pred_hidden, true_hidden).mean(dim=-1)


@register_reward("exact")
def exact_reward(pred_tokens, true_tokens, pred_hidden, true_hidden):
    return per_token_match(pred_tokens, true_tokens).mean(dim=-1)


@register_reward("hybrid")
def hybrid_reward(pred_tokens, true_tokens, pred_hidden, true_hidden):
    per_token = per_token_cosine(pred_hidden, true_hidden) + per_token_match(pred_tokens, true_tokens)
    return per_token.mean(dim=-1)
