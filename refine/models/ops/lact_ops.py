"""LaCT (Large Chunk Test-Time Training) as pure tensor functions: fast weights, segment plan, attention.

Layout is [B, T, H, D] for token tensors; fast weights are [B, H, D_out, D_in] (one matrix per row and head).
The fast-weight function is the SwiGLU MLP f_W(x) = W1 (silu(W0 x) * (W2 x)); its "loss" on a chunk is the
negative dot product -<f_W(k), v> weighted per token by learning rates, so one update *adds* lr-weighted
gradients (apply-then-update: tokens of chunk i read the weights written by chunks < i).

Rows of a batch may be at different positions: `plan_segment` maps each row's real tokens onto an aligned
layout whose chunk boundaries sit at multiples of the chunk size for every row (row b's pending, not yet
written tokens first, then its new tokens). Fast-weight updates run chunk by chunk over that layout as
batched matmuls over the rows that complete the chunk (all rows in a forward from the start, a few when
decoding from states at different positions); the other rows keep their weights.

Deviations from the official code (a1600012888/LaCT, lact_llm/lact_model/ttt_operation.py), with reasons:
- Newton-Schulz runs in the input dtype, not bf16: fp32 on CPU keeps the chunked, segment-carried and
  token-by-token forms equal to 1e-4 (the official cast is a GPU speed choice).
- The update of the last chunk is computed when the caller needs the state after the segment (the
  official code never updates with the last chunk: it has no recurrent form). Outputs are unaffected.
- Padding: slots of the aligned layout that hold no token have k = v = lr = 0, so they write nothing; the
  official code ignores padding in its fast-weight branch.
- The row norms that each update restores are those of the learnable initial weights, passed in
  explicitly, which is what the official code computes at the start of every sequence.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

NS_COEFFICIENTS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)


def l2_normalize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """x / (||x|| + eps) over the last dim (the official form, eps outside the norm)."""
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half (GPT-NeoX) RoPE, per-row positions. x: [B, T, H, D], positions: [B, T] -> [B, T, H, D]."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))
    angles = positions.to(torch.float32)[..., None] * inv_freq  # [B, T, D/2]
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)[:, :, None].to(x.dtype)  # [B, T, 1, D]
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)[:, :, None].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def newton_schulz5(g: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Approximate orthogonalisation (Muon) of each matrix. g: [..., m, n] -> [..., m, n]."""
    wide = g.shape[-2] > g.shape[-1]
    x = g.mT if wide else g
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for a, b, c in NS_COEFFICIENTS:
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if wide else x


def swiglu_apply(fw: dict[str, torch.Tensor], q: torch.Tensor) -> torch.Tensor:
    """f_W(q) = W1 (silu(W0 q) * (W2 q)). fw["w0"], fw["w2"]: [B, H, Dh, Din]; fw["w1"]: [B, H, Dout, Dh];
    q: [B, T, H, Din] -> [B, T, H, Dout]."""
    qt = q.transpose(1, 2)  # [B, H, T, Din]
    hidden = F.silu(qt @ fw["w0"].mT) * (qt @ fw["w2"].mT)  # [B, H, T, Dh]
    return (hidden @ fw["w1"].mT).transpose(1, 2)


def swiglu_update(
    fw: dict[str, torch.Tensor],
    k: torch.Tensor,
    v: torch.Tensor,
    lr: torch.Tensor,
    momentum_gate: torch.Tensor | None,
    init_norms: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    use_muon: bool,
    prenorm: bool,
) -> dict[str, torch.Tensor]:
    """One chunk's update of the fast weights (every row updates).

    fw: "w0", "w1", "w2" (applied weights), plus "m0".."m2" (momentum, [B, H, ...] like the weights) when
    momentum_gate is given, plus "a0".."a2" (un-normalised accumulators) when prenorm.
    k, v: [B, C, H, D]; lr: [B, C, H, 3] (for W0, W1, W2); momentum_gate: [B, C, H] in (0, 1);
    init_norms: row norms [H, D_out, 1] of the learnable initial W0, W1, W2. Returns the new fw dict.
    """
    kt, vt = k.transpose(1, 2), v.transpose(1, 2)  # [B, H, C, D]
    lr0, lr1, lr2 = lr.transpose(1, 2).unbind(-1)  # each [B, H, C]
    gate_pre = kt @ fw["w0"].mT  # [B, H, C, Dh]
    up = kt @ fw["w2"].mT
    gate = F.silu(gate_pre)
    sig = torch.sigmoid(gate_pre)
    d_hidden = vt @ fw["w1"]  # [B, H, C, Dh]
    d_up = d_hidden * gate
    d_gate_pre = d_hidden * up * sig * (1 + gate_pre * (1 - sig))
    grads = [
        d_gate_pre.mT @ (kt * lr0[..., None]),  # [B, H, Dh, Din]
        vt.mT @ (gate * up * lr1[..., None]),  # [B, H, Dout, Dh]
        d_up.mT @ (kt * lr2[..., None]),  # [B, H, Dh, Din]
    ]
    new = {}
    if momentum_gate is not None:
        beta = momentum_gate.mean(dim=1)[..., None, None]  # [B, H, 1, 1]
        grads = [g + fw[f"m{i}"] * beta for i, g in enumerate(grads)]
        new.update({f"m{i}": g for i, g in enumerate(grads)})
    if use_muon:
        grads = [newton_schulz5(g) for g in grads]
    for i, g in enumerate(grads):
        base = fw[f"a{i}"] if prenorm else fw[f"w{i}"]
        summed = base + g
        if prenorm:
            new[f"a{i}"] = summed
        new[f"w{i}"] = summed / (summed.norm(dim=-1, keepdim=True) + 1e-5) * init_norms[i]
    return new


class SegmentPlan(NamedTuple):
    """Where each new token of a segment goes; identical for every layer of a forward.

    valid: [B, T] bool (real tokens); positions: [B, T] Long (real-token index in the row's sequence);
    rows, slots: Long index pairs of the valid tokens into the aligned layout [B, L];
    token_chunk: [B, T] Long (chunk of the aligned layout that holds the token; -1 for padding);
    update_rows: per update u, the rows whose chunk u is full, so they update (Long [R]), or None when
    every row does; ranges: per aligned chunk j,
    the token span [lo, hi) of the segment that holds its tokens; aligned_len: L;
    pending_start: [B] Long (first slot of the row's pending chunk after the segment);
    end_positions: [B] Long (real tokens seen after the segment).
    """

    valid: torch.Tensor
    positions: torch.Tensor
    rows: torch.Tensor
    slots: torch.Tensor
    token_chunk: torch.Tensor
    update_rows: list[torch.Tensor | None]
    ranges: list[tuple[int, int]]
    aligned_len: int
    pending_start: torch.Tensor
    end_positions: torch.Tensor


def plan_segment(
    valid: torch.Tensor, start_positions: torch.Tensor, chunk_size: int, need_state: bool
) -> SegmentPlan:
    """valid: [B, T] bool; start_positions: [B] Long (real tokens already seen). Without need_state the
    updates that only the final state would read are skipped."""
    counts = valid.long().cumsum(dim=1)  # [B, T]
    positions = (start_positions[:, None] + counts - 1).clamp_min(0)
    chunk_base = start_positions - start_positions % chunk_size  # [B]
    slot_of = positions - chunk_base[:, None]
    token_chunk = torch.where(valid, slot_of // chunk_size, -1)
    totals = start_positions % chunk_size + counts[:, -1]  # [B] tokens in the aligned layout
    full_chunks = totals // chunk_size
    n_chunks = int(token_chunk.max().item()) + 1 if valid.any() else 0
    n_updates = (
        int(full_chunks.max().item()) if need_state else min(int(full_chunks.max().item()), n_chunks - 1)
    )
    n_updates = max(n_updates, 0)
    # decoding from states at different positions completes a chunk in a few rows at a time: those
    # rows alone are updated (the Muon step costs as much per row as in a full forward)
    full_cpu = full_chunks.cpu()
    update_rows = [
        None if bool((full_cpu > u).all()) else (full_cpu > u).nonzero().flatten().to(valid.device)
        for u in range(n_updates)
    ]
    chunk_cpu = token_chunk.cpu()
    ranges = []
    for j in range(n_chunks):
        hits = (chunk_cpu == j).any(dim=0).nonzero().flatten()
        ranges.append((int(hits[0]), int(hits[-1]) + 1) if len(hits) else (0, 0))
    rows, cols = valid.nonzero(as_tuple=True)
    return SegmentPlan(
        valid=valid,
        positions=positions,
        rows=rows,
        slots=slot_of[rows, cols],
        token_chunk=token_chunk,
        update_rows=update_rows,
        ranges=ranges,
        aligned_len=chunk_size * (int(full_chunks.max().item()) + 1),
        pending_start=full_chunks * chunk_size,
        end_positions=start_positions + counts[:, -1],
    )


def align_tokens(plan: SegmentPlan, pending: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Aligned layout [B, L, ...]: the row's pending tokens (pending: [B, C, ...], zero past the fill level)
    followed by its valid new tokens (new: [B, T, ...])."""
    batch, chunk = pending.shape[:2]
    tail = pending.new_zeros(batch, plan.aligned_len - chunk, *pending.shape[2:])
    aligned = torch.cat([pending, tail], dim=1)
    return aligned.index_put((plan.rows, plan.slots), new[plan.valid].to(aligned.dtype))


def take_pending(plan: SegmentPlan, aligned: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """The pending chunk left after the segment, [B, C, ...], zero past the new fill level."""
    offsets = torch.arange(chunk_size, device=aligned.device)
    index = plan.pending_start[:, None] + offsets  # [B, C]
    taken = aligned[torch.arange(aligned.shape[0], device=aligned.device)[:, None], index]
    filled = offsets < (plan.end_positions % chunk_size)[:, None]  # [B, C]
    return taken * filled.view(*filled.shape, *([1] * (taken.dim() - 2))).to(taken.dtype)


def block_causal_fast_weights(
    plan: SegmentPlan,
    fw: dict[str, torch.Tensor],
    q: torch.Tensor,
    aligned: dict[str, torch.Tensor],
    init_norms: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    chunk_size: int,
    use_muon: bool,
    prenorm: bool,
    history: list[dict[str, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Apply-then-update over the aligned layout.

    q: [B, T, H, D] queries of the segment; aligned: "k", "v" [B, L, H, D], "lr" [B, L, H, 3] and, with
    momentum, "gate" [B, L, H]. Returns the outputs [B, T, H, D] (zero at padding) and the fast weights
    after every chunk the rows completed. `history`, if given, receives the fast weights before aligned
    chunk 0, 1, ..., and after the last update.
    """
    weights_before = [] if history is None else history
    weights_before.append(fw)
    for u, rows in enumerate(plan.update_rows):
        span = slice(u * chunk_size, (u + 1) * chunk_size)
        chunk = {name: value[:, span] for name, value in aligned.items()}
        before = fw
        if rows is not None:  # only some rows complete this chunk: update just those
            before = {name: value.index_select(0, rows) for name, value in fw.items()}
            chunk = {name: value.index_select(0, rows) for name, value in chunk.items()}
        new = swiglu_update(
            before, chunk["k"], chunk["v"], chunk["lr"], chunk.get("gate"), init_norms, use_muon, prenorm
        )
        if rows is None:
            fw = {name: new[name] for name in fw}
        else:
            fw = {name: value.index_copy(0, rows, new[name]) for name, value in fw.items()}
        weights_before.append(fw)
    out = q.new_zeros(*q.shape[:3], weights_before[0]["w1"].shape[-2])
    for j, (lo, hi) in enumerate(plan.ranges):
        if hi > lo:
            piece = swiglu_apply(weights_before[j], q[:, lo:hi])
            here = (plan.token_chunk[:, lo:hi] == j)[..., None, None]
            out[:, lo:hi] = torch.where(here, piece, out[:, lo:hi])
    return out, fw


def sliding_window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    q_valid: torch.Tensor,
    window: int,
) -> torch.Tensor:
    """Causal attention over the last `window` positions (the query's own included).

    q: [B, T, H, D]; k, v: [B, P + T, H, D] (P cached keys, then the segment's); q_positions: [B, T];
    k_positions: [B, P + T] with -1 for empty or padding slots; q_valid: [B, T]. Queries are processed in
    blocks of `window`, each against the keys it can reach. Returns [B, T, H, D] (padding rows attend to
    every key of their block so that they stay finite; their values are not used).
    """
    length = q.shape[1]
    cached = k.shape[1] - length
    outs = []
    for lo in range(0, length, window):
        hi = min(lo + window, length)
        k_lo = max(0, cached + lo - (window - 1))
        qp = q_positions[:, lo:hi, None]  # [B, Q, 1]
        kp = k_positions[:, None, k_lo : cached + hi]  # [B, 1, K]
        allowed = (kp >= 0) & (kp <= qp) & (qp - kp < window)
        allowed = allowed | ~q_valid[:, lo:hi, None]
        o = F.scaled_dot_product_attention(
            q[:, lo:hi].transpose(1, 2),
            k[:, k_lo : cached + hi].transpose(1, 2),
            v[:, k_lo : cached + hi].transpose(1, 2),
            attn_mask=allowed[:, None],
        )
        outs.append(o.transpose(1, 2))
    return torch.cat(outs, dim=1)


def keep_last_keys(k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, size: int):
    """The last `size` valid keys of each row, newest last. k, v: [B, N, H, D]; positions: [B, N] (-1 marks
    an empty slot). Returns k, v [B, size, H, D] and positions [B, size] (-1 where empty)."""
    valid = positions >= 0
    from_end = valid.flip(1).long().cumsum(1).flip(1)  # [B, N]: valid keys at or after this one
    keep = valid & (from_end <= size)
    rows, cols = keep.nonzero(as_tuple=True)
    slots = size - from_end[rows, cols]
    batch = k.shape[0]
    k_out = k.new_zeros(batch, size, *k.shape[2:]).index_put((rows, slots), k[rows, cols])
    v_out = v.new_zeros(batch, size, *v.shape[2:]).index_put((rows, slots), v[rows, cols])
    p_out = positions.new_full((batch, size), -1).index_put((rows, slots), positions[rows, cols])
    return k_out, v_out, p_out
