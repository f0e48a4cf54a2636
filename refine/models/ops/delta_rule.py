"""The delta rule (DeltaNet) in pure PyTorch: a chunked WY form and a token recurrence.

Both forms compute, per head, with a fast-weight state S of shape [K, V] and an optional
log-decay g_t <= 0 (the gated delta rule of Gated DeltaNet; g = 0 is plain DeltaNet):

    S_t = exp(g_t) S_{t-1} + k_t u_t^T,   u_t = beta_t (v_t - exp(g_t) S_{t-1}^T k_t)
    o_t = scale * S_t^T q_t

`chunk_delta_rule` and `recurrent_delta_rule` are drop-in replacements for fla 0.6.0's
`chunk_delta_rule` and `fused_recurrent_delta_rule` (same arguments, same return values:
outputs [B, T, H, V] in the input dtype, final state [N, H, K, V]). `delta_rule_forward` is
the shared driver that the gated variant (`gated_delta_rule.py`) also calls.

Chunked form (chunk size C, default 64): within a chunk with start state S and in-chunk
cumulative log-decay gamma, the corrected values are U = Ubar - W S with
Ubar = T^{-1} diag(beta) V and W = T^{-1} diag(beta exp(gamma)) K, where
T = I + strict_tril(diag(beta) (K K^T * exp(gamma_i - gamma_j))) is unit lower-triangular and
is inverted by `torch.linalg.solve_triangular` for all chunks at once; only the state
hand-over between chunks is a Python loop. Gradients come from autograd.

Deviations from fla's Triton kernels, with reasons:
- float32 and float64 inputs are accepted (fla's chunk kernel rejects float32); the math runs
  in float32 for half-precision inputs and in float64 for float64 inputs, so that tests can
  compare in double precision. The final state has that compute dtype (fla: always float32).
- Variable-length packed inputs (`cu_seqlens`, B = 1) are right-padded to the longest
  sequence and run as a batch. Padded tokens have k = 0, beta = 0, g = 0, which leaves the
  state unchanged, so outputs and final states equal separate per-sequence runs. Memory and
  time follow N x max length rather than the packed length.
- Per-channel beta of shape [B, T, H, V] (accepted by fla's recurrent kernel) is rejected
  with an error: no fla layer uses it and the chunked form cannot express it.

States at any position, after the fact (`record_chunks` / `state_at`): inside
`with record_chunks() as tape:` every call of the driver uses the chunked form (short inputs
too) and appends to `tape` what the state at *any* position can be rebuilt from — the state at
every chunk start, the corrected values U, K and the in-chunk decays. Within chunk n the state
after its first m tokens is exp(gamma_{m-1}) S_n + sum_{i<m} exp(gamma_{m-1} - gamma_i) k_i u_i^T,
because U is lower-triangular in the tokens (u_i depends on tokens <= i only). So one forward
over a whole sequence yields the states at positions chosen only after it, still connected to
the graph (REFINE's one-pass update, refine/models/state.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

_TAPE: ContextVar[list[dict[str, torch.Tensor]] | None] = ContextVar("delta_rule_tape", default=None)


@contextmanager
def record_chunks() -> Iterator[list[dict[str, torch.Tensor]]]:
    """Record, per call of the delta-rule driver, what `state_at` needs (see the module doc).

    Each entry: "starts" [B, H, N+1, K, V] (state at each chunk start, then the final state),
    "k" [B, H, N, C, K], "u" [B, H, N, C, V], "gamma" [B, H, N, C] (in-chunk cumulative log-decay).
    """
    tape: list[dict[str, torch.Tensor]] = []
    token = _TAPE.set(tape)
    try:
        yield tape
    finally:
        _TAPE.reset(token)


def state_at(entry: dict[str, torch.Tensor], rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """State after the first positions[r] tokens of row rows[r], from a `record_chunks` entry.

    rows, positions: LongTensor [R] (0 <= positions <= T). Returns [R, H, K, V], in the graph.
    """
    starts, k, u, gamma = entry["starts"], entry["k"], entry["u"], entry["gamma"]
    n_chunks, size = k.shape[2], k.shape[3]
    chunk, m = positions // size, positions % size  # [R]
    inner = chunk.clamp(max=n_chunks - 1)  # a position at the very end reads no chunk tokens (m = 0)
    start = starts[rows, :, chunk]  # [R, H, K, V]
    k_n, u_n, gamma_n = k[rows, :, inner], u[rows, :, inner], gamma[rows, :, inner]  # [R, H, C, .]
    last = gamma_n.gather(-1, (m - 1).clamp(min=0)[:, None, None].expand(-1, gamma_n.shape[1], 1))
    last = torch.where((m > 0)[:, None, None], last, torch.zeros_like(last))  # [R, H, 1]
    before = (torch.arange(size, device=k.device) < m[:, None])[:, None, :]  # [R, 1, C]
    weight = torch.where(before, last - gamma_n, torch.full_like(gamma_n, float("-inf"))).exp()
    return last.exp()[..., None] * start + (k_n * weight[..., None]).transpose(-1, -2) @ u_n


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """fla's in-kernel L2 norm over the last dim: x / sqrt(sum(x^2) + eps)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunked_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor,
    chunk_size: int,
    tape: list[dict[str, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked WY form. q, k: [B, H, T, K] (q pre-scaled); v: [B, H, T, V]; beta, g: [B, H, T];
    state: [B, H, K, V]. Returns outputs [B, H, T, V] and the final state [B, H, K, V].
    With `tape` given, appends the entry that `state_at` reads."""
    B, H, T, K = k.shape
    V = v.shape[-1]
    C = min(chunk_size, T)  # one chunk of the exact length for short inputs
    pad = (-T) % C
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        beta, g = F.pad(beta, (0, pad)), F.pad(g, (0, pad))
    N = (T + pad) // C
    q, k = q.view(B, H, N, C, K), k.view(B, H, N, C, K)
    v = v.view(B, H, N, C, V)
    beta, gamma = beta.view(B, H, N, C), g.view(B, H, N, C).cumsum(-1)

    incl = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    # decay[i, j] = exp(gamma_i - gamma_j) for j <= i, else 0: [B, H, N, C, C]
    decay = (gamma[..., :, None] - gamma[..., None, :]).masked_fill(~incl, float("-inf")).exp()
    strict = decay.tril(-1) * beta[..., :, None] * (k @ k.transpose(-1, -2))
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    rhs = torch.cat([k * (beta * gamma.exp())[..., None], v * beta[..., None]], dim=-1)
    solved = torch.linalg.solve_triangular(eye + strict, rhs, upper=False, unitriangular=True)
    w, u_bar = solved[..., :K], solved[..., K:]  # [B, H, N, C, K], [B, H, N, C, V]
    attn = (q @ k.transpose(-1, -2)) * decay  # [B, H, N, C, C]
    q_decayed = q * gamma.exp()[..., None]
    k_to_end = k * (gamma[..., -1:] - gamma).exp()[..., None]
    chunk_decay = gamma[..., -1].exp()[..., None, None]  # [B, H, N, 1, 1]

    outputs, starts, corrected = [], [], []
    # unbind once: per-chunk slicing inside the loop would make autograd add N full-size gradients
    per_chunk = (x.unbind(2) for x in (u_bar, w, q_decayed, attn, k_to_end, chunk_decay))
    for u_bar_n, w_n, q_n, attn_n, k_n, decay_n in zip(*per_chunk, strict=True):
        starts.append(state)
        u = u_bar_n - w_n @ state  # [B, H, C, V]
        corrected.append(u)
        outputs.append(q_n @ state + attn_n @ u)
        state = decay_n * state + k_n.transpose(-1, -2) @ u
    o = torch.stack(outputs, dim=2).view(B, H, N * C, V)[:, :, :T]
    if tape is not None:
        tape.append(
            {
                "starts": torch.stack(starts + [state], dim=2),
                "k": k,
                "u": torch.stack(corrected, dim=2),
                "gamma": gamma,
            }
        )
    return o, state


def recurrent_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token recurrence; same shapes and result as `chunked_core`."""
    outputs = []
    per_token = (x.unbind(2) for x in (q, k, v, beta, g))  # unbind once, as in `chunked_core`
    for q_t, k_t, v_t, beta_t, g_t in zip(*per_token, strict=True):
        state = state * g_t.exp()[..., None, None]  # [B, H, K, V]
        predicted = (k_t[:, :, None, :] @ state).squeeze(-2)  # [B, H, V]
        u = beta_t[..., None] * (v_t - predicted)
        state = state + k_t[..., :, None] * u[..., None, :]
        outputs.append((q_t[:, :, None, :] @ state).squeeze(-2))
    return torch.stack(outputs, dim=2), state


def varlen_mask(cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cu_seqlens [N + 1] -> (mask [N, Tmax], True at each sequence's tokens; lengths [N])."""
    lens = cu_seqlens.diff().long()
    return torch.arange(int(lens.max()), device=cu_seqlens.device) < lens[:, None], lens


def pad_varlen(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Packed [1, total, ...] -> right-padded [N, Tmax, ...] with zeros; mask: [N, Tmax]."""
    padded = x.new_zeros(*mask.shape, *x.shape[2:])
    padded[mask] = x[0]
    return padded


def delta_rule_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    g: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    use_qk_l2norm_in_kernel: bool,
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shared driver (keyword-only past beta: the stand-ins forward fla's arguments by name).
    q, k: [B, T, H, K]; v: [B, T, H, V]; beta, g (log-decay or None): [B, T, H];
    initial_state: [N, H, K, V]; cu_seqlens: [N + 1] with B = 1. `chunk_size=None` selects the
    token recurrence, an int the chunked form. Returns o [B, T, H, V] in q's dtype and the final
    state [N, H, K, V] (or None)."""
    if beta.dim() != 3:
        raise ValueError(f"beta must have shape [B, T, H], got {tuple(beta.shape)}.")
    if cu_seqlens is not None and q.shape[0] != 1:
        raise ValueError(f"with cu_seqlens the batch size must be 1, got {q.shape[0]}.")
    out_dtype = q.dtype
    dtype = compute_dtype(q.dtype)
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, beta = (x.to(dtype) for x in (q, k, v, beta))
    g = torch.zeros_like(beta) if g is None else g.to(dtype)
    if use_qk_l2norm_in_kernel:
        q, k = l2_normalize(q), l2_normalize(k)
    q = q * scale

    mask = None
    if cu_seqlens is not None:
        mask, _ = varlen_mask(cu_seqlens)
        q, k, v, beta, g = (pad_varlen(x, mask) for x in (q, k, v, beta, g))
    B, _, H, K = k.shape
    state = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(dtype)
    if state.shape[0] != B:
        raise ValueError(f"initial_state holds {state.shape[0]} sequences, the input {B}.")
    q, k, v, beta, g = (x.transpose(1, 2) for x in (q, k, v, beta, g))
    tape = _TAPE.get()
    if tape is not None:
        if mask is not None:
            raise ValueError("record_chunks does not support packed inputs (cu_seqlens).")
        o, state = chunked_core(q, k, v, beta, g, state, chunk_size or 64, tape)
    elif chunk_size is None:
        o, state = recurrent_core(q, k, v, beta, g, state)
    else:
        o, state = chunked_core(q, k, v, beta, g, state, chunk_size)
    o = o.transpose(1, 2)
    if mask is not None:
        o = o[mask].unsqueeze(0)
    return o.to(out_dtype), (state if output_final_state else None)


def _ungated_forward(arguments: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The driver without decay (g = None) for a stand-in's own arguments, each passed on by name:
    `arguments` is the stand-in's `dict(locals())` taken before it makes a local of its own, so it
    holds exactly its parameters. `chunk_size` absent (the recurrent stand-in) selects the token
    recurrence; fla's precomputed `cu_seqlens_cpu` is not needed on the CPU."""
    arguments.pop("cu_seqlens_cpu", None)
    chunk_size = arguments.pop("chunk_size", None)
    return delta_rule_forward(**arguments, g=None, chunk_size=chunk_size)


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked delta rule with fla's `chunk_delta_rule` signature.

    q, k: [B, T, H, K]; v: [B, T, H, V]; beta: [B, T, H]; initial_state: [N, H, K, V].
    Returns o [B, T, H, V] and the final state [N, H, K, V] if `output_final_state`.
    `cu_seqlens_cpu` is accepted for signature compatibility; `cu_seqlens` is already on the CPU.
    """
    return _ungated_forward(dict(locals()))


def recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token-recurrent delta rule with fla's `fused_recurrent_delta_rule` signature.

    Shapes as `chunk_delta_rule`; beta defaults to ones.
    """
    arguments = dict(locals())  # first: the parameters only
    arguments["beta"] = torch.ones_like(q[..., 0]) if beta is None else beta
    return _ungated_forward(arguments)


# Longest input the token loop handles in `short_input_delta_rule`: below it the loop is
# cheaper (decoding), above it the chunked form is (short training documents).
RECURRENT_MAX_TOKENS = 8


def short_input_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What fla's DeltaNet layer calls for inputs of ≤ 64 tokens (`fused_recurrent_delta_rule`).

    fla switches to its recurrent kernel there, even in training. On the CPU a token loop over
    32 tokens is ~4x slower than the chunked form, so inputs longer than RECURRENT_MAX_TOKENS
    go to the chunked form (one chunk); the two agree to rounding (tested).
    """
    forward = dict(
        q=q,
        k=k,
        v=v,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        cu_seqlens=cu_seqlens,
    )
    if q.shape[1] <= RECURRENT_MAX_TOKENS:
        return recurrent_delta_rule(beta=beta, **forward)
    beta = torch.ones_like(q[..., 0]) if beta is None else beta
    return chunk_delta_rule(beta=beta, **forward)
