"""The gated delta rule (Gated DeltaNet) in pure PyTorch, with fla 0.6.0's two call signatures.

`chunk_gated_delta_rule` and `recurrent_gated_delta_rule` replace fla's
`chunk_gated_delta_rule` and `fused_recurrent_gated_delta_rule`. They apply, in this order,
the input transforms that fla fuses into its kernels and then run the shared driver of
`delta_rule.py` (chunked WY form or token recurrence) with the per-head log-decay g:

- `use_qk_l2norm_in_kernel`: q, k <- q / sqrt(sum q^2 + 1e-6), k likewise;
- `use_beta_sigmoid_in_kernel`: beta <- sigmoid(beta), times 2 if `allow_neg_eigval`;
- `use_gate_in_kernel`: g <- -exp(A_log) * softplus(g + dt_bias) (`gdn_gate`);
- grouped value heads (GVA, HV = G * H value heads): value head j reads q/k head j // G;
- `state_v_first`: states are stored as [N, HV, V, K] instead of [N, HV, K, V].

Shapes: q, k [B, T, H, K]; v [B, T, HV, V]; g, beta [B, T, HV]; A_log, dt_bias [HV];
initial/final state [N, HV, K, V] (or [N, HV, V, K] with `state_v_first`).

Deviations from fla's kernels, with reasons (see also `delta_rule.py`):
- fla computes the decay in base 2 (exp2 of g / ln 2); here it is exp(g): the same value up to
  rounding.
- Per-key and per-value decays (`gk`, `gv` of the recurrent kernel) and context parallelism
  (`cp_context`) raise an error: no Gated DeltaNet layer uses them on a single CPU.
- fla's recurrent kernel has no backward pass; this one has (autograd), which the gradient
  tests use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from refine.models.ops.delta_rule import compute_dtype, delta_rule_forward


def gdn_gate(g: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Gated DeltaNet log-decay: -exp(A_log) * softplus(g + dt_bias). g: [..., HV]; A_log, dt_bias: [HV]."""
    dtype = compute_dtype(g.dtype)
    g = g.to(dtype)
    if dt_bias is not None:
        g = g + dt_bias.to(dtype)
    return -A_log.to(dtype).exp() * F.softplus(g)


def _gated_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    use_qk_l2norm_in_kernel: bool,
    use_gate_in_kernel: bool,
    A_log: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    use_beta_sigmoid_in_kernel: bool,
    allow_neg_eigval: bool,
    state_v_first: bool,
    cu_seqlens: torch.Tensor | None,
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Input transforms, GVA and state layout around `delta_rule_forward`; shapes as the module doc.
    Keyword-only past beta: the stand-ins forward fla's arguments by name."""
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must have the same number of heads, got {q.shape[2]} and {k.shape[2]}.")
    H, HV = q.shape[2], v.shape[2]
    if HV % H != 0:
        raise ValueError(f"num_v_heads ({HV}) must be divisible by num_heads ({H}).")
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise ValueError("allow_neg_eigval=True requires use_beta_sigmoid_in_kernel=True.")
    if use_gate_in_kernel:
        if A_log is None:
            raise ValueError("A_log must be provided when use_gate_in_kernel=True.")
        g = gdn_gate(g, A_log, dt_bias)
    if use_beta_sigmoid_in_kernel:
        beta = beta.to(compute_dtype(beta.dtype)).sigmoid() * (2.0 if allow_neg_eigval else 1.0)
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    if HV != H:
        q, k = q.repeat_interleave(HV // H, dim=2), k.repeat_interleave(HV // H, dim=2)
    if initial_state is not None and state_v_first:
        initial_state = initial_state.transpose(-1, -2)
    o, final_state = delta_rule_forward(
        q=q,
        k=k,
        v=v,
        beta=beta,
        g=g,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        chunk_size=chunk_size,
    )
    if final_state is not None and state_v_first:
        final_state = final_state.transpose(-1, -2).contiguous()
    return o, final_state


# Parameters of fla's signatures that `_gated_forward` does not take: precomputed helpers that the
# CPU does not need, and options each stand-in has refused (unless None) before forwarding.
_NOT_FORWARDED = ("cu_seqlens_cpu", "chunk_indices", "cp_context", "gk", "gv")


def _forward_by_name(arguments: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`_gated_forward` for a stand-in's own arguments, each passed on by name: `arguments` is the
    stand-in's `dict(locals())` taken before it makes a local of its own, so it holds exactly its
    parameters. `chunk_size` absent (the recurrent stand-in) selects the token recurrence."""
    forwarded = {name: value for name, value in arguments.items() if name not in _NOT_FORWARDED}
    forwarded.setdefault("chunk_size", None)
    return _gated_forward(**forwarded)


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    chunk_indices: torch.Tensor | None = None,
    cp_context: object | None = None,
    chunk_size: int = 64,
    use_gate_in_kernel: bool = False,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked gated delta rule with fla's `chunk_gated_delta_rule` signature (module doc for shapes).

    `cu_seqlens_cpu` and `chunk_indices` are fla's precomputed helpers, not needed here.
    Returns o [B, T, HV, V] in q's dtype and the final state if `output_final_state`.
    """
    if cp_context is not None:
        raise ValueError("context parallelism (cp_context) is not supported by the torch backend.")
    return _forward_by_name(dict(locals()))


def recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_gate_in_kernel: bool = False,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-recurrent gated delta rule with fla's `fused_recurrent_gated_delta_rule` signature.

    g defaults to no decay and beta to ones; shapes and returns as `chunk_gated_delta_rule`.
    """
    arguments = dict(locals())  # first: the parameters only
    if gk is not None or gv is not None:
        raise ValueError("per-key/per-value decays (gk, gv) are not supported by the torch backend.")
    if g is None:
        if use_gate_in_kernel:
            raise ValueError("g (the raw gate input) must be provided when use_gate_in_kernel=True.")
        arguments["g"] = torch.zeros_like(v[..., 0])
    arguments["beta"] = torch.ones_like(v[..., 0]) if beta is None else beta
    return _forward_by_name(arguments)
