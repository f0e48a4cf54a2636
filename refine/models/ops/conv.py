"""Causal depthwise short convolution with a cache, in pure PyTorch (fla 0.6.0's ShortConvolution).

    y_t = act(sum_{w < W} weight[:, w] * x_{t - W + 1 + w} + bias) + residual_t

over x [B, T, D] with weight [D, W]; act is SiLU or the identity. The cache has fla's layout
[N, D, W]: cache[n, :, w] is input x_{T - W + w} of sequence n (the newest input at w = W - 1,
zeros before the start), so fla's `Cache` objects and the GPU kernels stay interchangeable.
The cache includes the newest input, so the next step reads entries 1..W-1 as its W-1
previous inputs.

`causal_conv1d` has fla's `causal_conv1d` signature (the gated DeltaNet layer calls it
directly); `short_convolution_forward` replaces `ShortConvolution.forward`, single decoding
tokens included (fla sends those to a separate in-place update kernel).

Deviations from fla, with reasons:
- One code path for every length: a single decoding token goes through the same convolution
  as a prompt, so prefill and decoding share numerics.
- The cache is never written in place (fla's no-grad single-token GPU path mutates it); a new
  tensor is returned. References to an old cache therefore keep their old value, which is
  what carrying states through autograd needs.
- `cu_seqlens` inputs are right-padded to the longest sequence and run as a batch.
- The math runs in float32 (float64 for float64 inputs); the output has x's dtype, the cache
  too.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from refine.models.ops.delta_rule import compute_dtype, pad_varlen, varlen_mask


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    activation: str | None = None,
    backend: str | None = None,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    cp_context: object | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x, residual: [B, T, D] (B = 1 with cu_seqlens [N + 1]); weight: [D, W]; bias: [D];
    initial_state: [N, D, W]. Returns y [B, T, D] and the cache [N, D, W] if `output_final_state`.

    `backend`, `cu_seqlens_cpu` and `chunk_indices` are accepted for fla compatibility and unused.
    """
    if weight is None:
        raise ValueError("the torch backend needs the convolution weight.")
    if cp_context is not None:
        raise ValueError("context parallelism (cp_context) is not supported by the torch backend.")
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"unsupported activation {activation!r}; use None, 'silu' or 'swish'.")
    out_dtype = x.dtype
    dtype = compute_dtype(x.dtype)
    D, W = weight.shape
    x = x.to(dtype)

    mask = None
    if cu_seqlens is not None:
        if x.shape[0] != 1:
            raise ValueError(f"with cu_seqlens the batch size must be 1, got {x.shape[0]}.")
        mask, lens = varlen_mask(cu_seqlens)
        x = pad_varlen(x, mask)  # [N, Tmax, D]
    else:
        lens = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    N = x.shape[0]
    cache = x.new_zeros(N, D, W) if initial_state is None else initial_state.to(dtype)
    if cache.shape != (N, D, W):
        raise ValueError(f"cache must have shape {(N, D, W)}, got {tuple(cache.shape)}.")

    history = torch.cat([cache, x.transpose(1, 2)], dim=-1)  # [N, D, W + T]
    y = F.conv1d(history[..., 1:], weight.to(dtype)[:, None, :], groups=D)  # [N, D, T]
    y = y.transpose(1, 2)
    if bias is not None:
        y = y + bias.to(dtype)
    if activation is not None:
        y = F.silu(y)
    if mask is not None:
        y = y[mask].unsqueeze(0)
    if residual is not None:
        y = y + residual.to(dtype)

    final_state = None
    if output_final_state:
        # the last W entries of each sequence's history: positions lens .. lens + W - 1
        index = (lens[:, None] + torch.arange(W, device=x.device))[:, None, :].expand(N, D, W)
        final_state = history.gather(-1, index).to(out_dtype)
    return y.to(out_dtype), final_state


def short_convolution_forward(
    module: nn.Conv1d,
    x: torch.Tensor,
    residual: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    cache: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`ShortConvolution.forward` on the torch backend. x: [B, T, D]; mask: [B, T] (0 = padding);
    cache: [N, D, W]. Returns y [B, T, D] and the new cache [N, D, W] if `output_final_state`.
    Extra keyword arguments of fla's forward (e.g. `cu_seqlens_cpu`) are passed through."""
    if mask is not None:
        if cu_seqlens is not None:
            raise ValueError("mask and cu_seqlens cannot be given together.")
        x = x * mask[..., None].to(x.dtype)
    return causal_conv1d(
        x,
        weight=module.weight[:, 0, :],
        bias=module.bias,
        residual=residual,
        initial_state=cache,
        output_final_state=output_final_state,
        activation=module.activation,
        cu_seqlens=cu_seqlens,
        chunk_indices=chunk_indices,
        **kwargs,
    )
