"""The naive reference twin of `lact_ops.block_causal_fast_weights`: one row, one chunk at a time,
the update's gradients taken by autograd (fla keeps such a `naive.py` beside every fast kernel).

`naive_block_causal_fast_weights` follows the official loop (a1600012888/LaCT,
lact_llm/lact_model/ttt_operation.py) as plainly as it can be written: apply the current fast
weights to the chunk's queries, then take the gradient of the lr-weighted dot-product loss
<f_W(k), v> with respect to W0, W1, W2 by autograd (the fast op writes it out by hand), add
momentum, orthogonalise (Muon), add to the weights (or to the pre-norm accumulators) and restore
each row's initial norm. It is slow and for tests only (tests/models/test_lact.py compares it with
the fast op in float64).

Deviations from the official code: those of `lact_ops` (the update of the last chunk is skipped
here as there, since no state is asked for; Newton-Schulz in the input dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from refine.models.ops.lact_ops import newton_schulz5, swiglu_apply


def naive_block_causal_fast_weights(
    w: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lr: torch.Tensor,
    gate: torch.Tensor | None,
    chunk: int,
    use_muon: bool,
    prenorm: bool,
) -> torch.Tensor:
    """Outputs [T, H, D_out] of the fast-weight branch for one row (apply-then-update per chunk).

    w: the initial (W0 [H, Dh, Din], W1 [H, Dout, Dh], W2 [H, Dh, Din]); q, k, v: [T, H, D];
    lr: [T, H, 3] (per-token learning rates of W0, W1, W2); gate: [T, H] momentum gate or None
    (no momentum); chunk: tokens per update.
    """
    norms = [x.norm(dim=-1, keepdim=True) for x in w]  # [H, D_out, 1] each
    weights, accumulators, momentum = list(w), list(w), [torch.zeros_like(x) for x in w]
    out = []
    for lo in range(0, q.shape[0], chunk):
        fw = {f"w{i}": x[None] for i, x in enumerate(weights)}
        out.append(swiglu_apply(fw, q[None, lo : lo + chunk])[0])  # [C, H, Dout]
        if lo + chunk >= q.shape[0]:
            break
        params = [x.detach().requires_grad_() for x in weights]
        k_c, v_c = k[lo : lo + chunk], v[lo : lo + chunk]
        hidden = F.silu(torch.einsum("hed,thd->the", params[0], k_c))
        hidden = hidden * torch.einsum("hed,thd->the", params[2], k_c)  # [C, H, Dh]
        score = torch.einsum("the,hoe,tho->th", hidden, params[1], v_c)  # [C, H]
        grads = [
            torch.autograd.grad((score * lr[lo : lo + chunk, :, i]).sum(), params[i], retain_graph=True)[0]
            for i in range(3)
        ]
        if gate is not None:
            beta = gate[lo : lo + chunk].mean(0)[:, None, None]  # [H, 1, 1]
            grads = [g + m * beta for g, m in zip(grads, momentum, strict=True)]
            momentum = grads
        if use_muon:
            grads = [newton_schulz5(g) for g in grads]
        bases = accumulators if prenorm else weights
        accumulators = [b + g for b, g in zip(bases, grads, strict=True)]
        weights = [a / (a.norm(dim=-1, keepdim=True) + 1e-5) * n for a, n in zip(accumulators, norms, strict=True)]
    return torch.cat(out)
