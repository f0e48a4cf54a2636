"""Cross-entropy losses standing in for fla 0.6.0's Triton `FusedCrossEntropyLoss` and
`FusedLinearCrossEntropyLoss` on the torch backend.

fla's `_compute_logits_and_loss` builds one of these when the config sets
`fuse_cross_entropy` or `fuse_linear_cross_entropy` (released checkpoints set the former), so
the backend routes both names to these classes instead of failing on a CPU.

Deviations from fla, with reasons:
- The constructors take keywords only (they accept a subset of fla's options, so a positional
  argument would bind to another option than fla's); `forward` has fla's parameter names.
- Only the options fla's model code passes are accepted (`ignore_index`, `reduction`,
  `inplace_backward`, `use_l2warp`, `l2_penalty_factor`); label smoothing, logit scaling and
  soft-capping are not reproduced, so they are not accepted rather than silently ignored.
- The linear variant materialises the full logits (fla chunks them to save memory).
- `inplace_backward` is a memory optimisation of the Triton kernel; it changes nothing here.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from fla.modules.l2warp import l2_warp


class CrossEntropyLoss(nn.Module):
    """Token cross-entropy on logits [..., V] and targets [...], mean or sum over non-ignored tokens."""

    def __init__(self, *, ignore_index: int = -100, reduction: str = "mean", inplace_backward: bool = False):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002  (fla's name)
        logits = input.reshape(-1, input.shape[-1]).float()
        return F.cross_entropy(
            logits, target.reshape(-1), ignore_index=self.ignore_index, reduction=self.reduction
        )


class LinearCrossEntropyLoss(CrossEntropyLoss):
    """Cross-entropy of linear(x, weight, bias): x [B, T, D], target [B, T], weight [V, D], bias [V].
    With `use_l2warp`, fla's L2Warp penalty on the max logit is added to the gradient."""

    def __init__(
        self,
        *,
        ignore_index: int = -100,
        reduction: str = "mean",
        use_l2warp: bool = False,
        l2_penalty_factor: float = 1e-4,
    ):
        super().__init__(ignore_index=ignore_index, reduction=reduction)
        self.use_l2warp = use_l2warp
        self.l2_penalty_factor = l2_penalty_factor

    def forward(
        self, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = F.linear(x, weight, bias)  # [B, T, V]
        loss = super().forward(input=logits, target=target)
        if self.use_l2warp:
            loss = l2_warp(loss, logits, self.l2_penalty_factor)
        return loss
