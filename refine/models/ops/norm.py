"""RMSNorm, gated RMSNorm and the gated activations of fla 0.6.0, in pure PyTorch.

Drop-in replacements for the Triton functions that fla's modules call at run time:

- `rms_norm` for `fla.modules.norm.layernorm.rms_norm` (used by `RMSNorm.forward`), with fla's
  fused-residual semantics: with `residual`, the normalised input is x + residual, and with
  `prenorm=True` that sum is returned as well (the pre-norm residual stream of a block);
- `rms_norm_gated` for `fla.modules.norm.fused_norm_gate.rms_norm_gated` (used by
  `FusedRMSNormGated.forward`, the output norm of DeltaNet/Gated DeltaNet with `use_gate`):
  RMSNorm(x) * weight, then times swish(gate) or sigmoid(gate);
- `swiglu`, `swiglu_linear` for `fla.modules.mlp.swiglu` / `swiglu_linear`;
- `elu_p1` for `fla.modules.activations.elu_p1` (DeltaNet's `qk_activation='elu'`).

All math runs in float32 (float64 for float64 inputs); outputs have the input's dtype, as in
fla. The residual output has the residual's dtype, else float32 if `residual_in_fp32`, else
x's dtype. Shapes: x, residual, gate [..., D]; weight, bias [D]. fla's `num_groups` (group
norm) is not reproduced: the patched entry points never pass it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from refine.models.ops.delta_rule import compute_dtype


def _normalize(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    eps: float,
    residual_in_fp32: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + residual) / rms * weight + bias in the compute dtype, and the residual stream x + residual."""
    dtype = compute_dtype(x.dtype)
    stream = x.to(dtype) if residual is None else x.to(dtype) + residual.to(dtype)
    y = stream * torch.rsqrt(stream.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(dtype)
    if bias is not None:
        y = y + bias.to(dtype)
    if residual is not None:
        residual_dtype = residual.dtype
    else:
        residual_dtype = torch.float32 if residual_in_fp32 else x.dtype
    return y, stream.to(residual_dtype)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm of x (+ residual), [..., D] -> [..., D]; with `prenorm`, also returns x + residual."""
    y, stream = _normalize(x, weight, bias, residual, eps, residual_in_fp32)
    y = y.to(x.dtype)
    return (y, stream) if prenorm else y


def rms_norm_gated(
    x: torch.Tensor,
    g: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    activation: str = "swish",
    residual: torch.Tensor | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm of x (+ residual) times act(g), act = swish/silu or sigmoid; x, g: [..., D]."""
    y, stream = _normalize(x, weight, bias, residual, eps, residual_in_fp32)
    gate = g.to(y.dtype)
    if activation in ("swish", "silu"):
        y = y * F.silu(gate)
    elif activation == "sigmoid":
        y = y * torch.sigmoid(gate)
    else:
        raise ValueError(f"unsupported gate activation {activation!r}.")
    y = y.to(x.dtype)
    return (y, stream) if prenorm else y


def swiglu(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """silu(x) * y elementwise, computed in float32, returned in x's dtype."""
    dtype = compute_dtype(x.dtype)
    return (F.silu(x.to(dtype)) * y.to(dtype)).to(x.dtype)


def swiglu_linear(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """linear(silu(x) * y, weight, bias): x, y [..., I]; weight [D, I]; bias [D] -> [..., D]."""
    return F.linear(swiglu(x, y), weight, bias)


def elu_p1(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1, the positive feature map of DeltaNet's `qk_activation='elu'`."""
    return F.elu(x) + 1.0
