"""REFINE's losses: PPO-clipped policy loss on rollout tokens, NTP cross-entropy, their sum.

REFINE.md §1 step 6: L = lambda_ntp * L_ntp + lambda_pg * L_pg.

`ppo_policy_loss` follows the semantics of verl's `compute_policy_loss` (vanilla, token-mean),
per rollout token with ratio r = exp(logp - old_logp) and advantage A:
    l = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))          (PPO clip)
    l = min(l, -A dual_clip)                       when A < 0        (dual clip)
    L_pg = sum over unmasked tokens of l / number of unmasked tokens  (token-mean)
The log-ratio is clamped to [-20, 20] before exp, as in verl. Metrics, all token-means over
unmasked tokens and returned as detached 0-dim tensors (no device sync):
    clip_frac       the clipped surrogate was the larger one (verl's pg_clipfrac)
    clip_frac_dual  the dual clip was active: A < 0 and l > -A dual_clip (pg_clipfrac_lower)
    approx_kl       mean of old_logp - logp (verl's ppo_kl, the k1 estimator)
    ratio_mean      mean of r
On the first on-policy pass (old_logp = logp.detach()) r = 1 exactly, so L_pg = -mean(A) over
tokens, clip_frac = 0 and the gradient is the plain policy gradient -A grad logp / T.

Deviations from verl:
- Masked tokens are removed with `torch.where` before exp and before the sum, not multiplied by
  a 0/1 mask, so garbage in masked slots (inf, NaN log-probs of pad tokens) changes neither the
  loss nor any gradient.
- `num_tokens` optionally fixes the token-mean's denominator: with mini-batches or gradient
  accumulation, pass the token count of the whole batch so the sum of the parts equals the
  full-batch loss (verl passes a global token count for the same reason).

`ntp_loss` is the token-mean cross-entropy of next-token prediction (fp32 log-softmax; labels
shifted inside; label -100 is ignored; 0 when no token counts). With `chunk` the fp32 copy and the
log-softmax are made per chunk of positions under an activation checkpoint, so of the [B, S, V]
logits only the tensor itself and its gradient exist in full (not its fp32 copy, the saved
log-softmax or their gradients); the value and the gradient equal the unchunked ones to fp32
rounding. (Not materialising the logits at all needs the hidden states: `refine.train.chunked`.)
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over True entries of `mask` (same shape); 0 when none is True."""
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1)


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float = 3.0,
    num_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dual-clip PPO loss, token-mean: logp, old_logp, mask [N, k]; advantages [N] or [N, k].

    Returns (scalar loss, metrics). `num_tokens` (default: the unmasked count of `mask`) is the
    denominator of the loss; metrics always average over this call's unmasked tokens.
    """
    if dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    if not (0.0 <= clip_low < 1.0 and clip_high >= 0.0):
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    mask = mask.bool()
    adv = advantages.detach().float()
    if adv.dim() == logp.dim() - 1:
        adv = adv.unsqueeze(-1)  # [N] -> [N, 1], one advantage per rollout
    adv = torch.where(mask, adv.expand_as(mask), torch.zeros((), device=adv.device))  # [N, k]
    log_ratio = torch.where(
        mask, logp.float() - old_logp.detach().float(), torch.zeros((), device=mask.device)
    )
    log_ratio = log_ratio.clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)

    loss_unclipped = -adv * ratio
    loss_clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_ppo = torch.maximum(loss_unclipped, loss_clipped)
    loss_dual_bound = -adv * dual_clip
    per_token = torch.where(adv < 0, torch.minimum(loss_ppo, loss_dual_bound), loss_ppo)  # [N, k]

    denominator = mask.sum().clamp(min=1) if num_tokens is None else num_tokens
    loss = torch.where(mask, per_token, torch.zeros_like(per_token)).sum() / denominator

    with torch.no_grad():
        metrics = {
            "clip_frac": _masked_mean((loss_clipped > loss_unclipped).float(), mask),
            "clip_frac_dual": _masked_mean(((adv < 0) & (loss_ppo > loss_dual_bound)).float(), mask),
            "approx_kl": _masked_mean(-log_ratio, mask),
            "ratio_mean": _masked_mean(ratio, mask),
        }
    return loss, metrics


def _summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed fp32 cross-entropy: logits [B, C, V], targets [B, C] -> scalar."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def ntp_loss(logits: torch.Tensor, labels: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Token-mean next-token cross-entropy: logits [B, S, V], labels [B, S] -> scalar.

    logits[:, t] predicts labels[:, t + 1]; labels equal to -100 are ignored. `chunk`: positions per
    checkpointed fp32 cross-entropy (None: all at once).
    """
    shifted, targets = logits[:, :-1], labels[:, 1:]  # [B, S-1, V], [B, S-1]
    if chunk is None or chunk >= targets.shape[1]:
        summed = _summed_cross_entropy(shifted, targets)
    else:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 or None, got {chunk}")
        summed = sum(
            checkpoint(_summed_cross_entropy, shifted[:, lo : lo + chunk], targets[:, lo : lo + chunk],
                       use_reentrant=False)
            for lo in range(0, targets.shape[1], chunk)
        )  # fmt: skip
    return summed / (targets != IGNORE_INDEX).sum().clamp(min=1)


def combined_loss(
    l_ntp: torch.Tensor | None, l_pg: torch.Tensor | None, lambda_ntp: float, lambda_pg: float
) -> torch.Tensor:
    """lambda_ntp * l_ntp + lambda_pg * l_pg; a term whose lambda is 0 is left out and may be None.

    Leaving zero-weight terms out (rather than multiplying by 0) keeps a NaN of an unused term
    out of the loss and lets the NTP-only baselines skip the rollouts altogether.
    """
    terms = []
    for name, value, weight in (("l_ntp", l_ntp, lambda_ntp), ("l_pg", l_pg, lambda_pg)):
        if weight == 0:
            continue
        if value is None:
            raise ValueError(
                f"{name} is None but its weight is {weight}; pass the loss or set the weight to 0"
            )
        terms.append(weight * value)
    if not terms:
        raise ValueError("lambda_ntp and lambda_pg are both 0: there is no loss to optimise")
    return sum(terms[1:], terms[0])
