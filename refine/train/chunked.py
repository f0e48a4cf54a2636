"""The LM head applied in sequence chunks: bounded-memory scoring pass and NTP loss.

A full-vocabulary logits tensor is rows x S x V: at paper sizes (16 rows per rank x 16K tokens x
32K vocabulary) that is 8 Gi elements, ~32 GB in bf16 and twice that again for its fp32 copy. Both
the no-grad scoring pass of REFINE (entropies + final hidden states, REFINE.md §1 step 1) and the
NTP cross-entropy only need the logits one position at a time, so here the model body runs once
(the forward is asked for the logits of the last position only, `logits_to_keep=1`) and the LM head
is applied per chunk of `chunk` positions, in fp32 for the entropy and the loss:

- `score_pass(model, input_ids, micro_batch, chunk)`: hidden states [B, S, D] and entropies
  [B, S] (fp32), rows in micro-batches of `micro_batch`, the head per chunk; the largest transient
  is micro_batch x chunk x V (logits, their fp32 copy and the softmax);
- `chunked_entropy(hidden, head, chunk, micro_batch)`: the entropies of given hidden states
  (REFINE's first mini-batch reuses the hidden states of its grad forward);
- `chunked_next_token_loss(hidden, head, labels, chunk)`: the shifted token-mean cross-entropy with
  gradients; each chunk's head + cross-entropy runs under a non-reentrant activation checkpoint, so
  neither the forward nor the backward ever holds more than one chunk's logits (the backward
  recomputes them, one extra head matmul per token); a sequence of one chunk keeps its logits
  instead, which is the same one chunk.

Both equal their unchunked twins (`refine.rl.positions.token_entropy` of the full logits,
`refine.train.ntp.next_token_loss`) to fp32 rounding, gradients included (tested). The memory of
the pass grows with the chunk, not with S (`tools/bench_scoring_memory.py`).

Deviations / notes:
- fla ships a fused linear cross-entropy (Triton, CUDA only). It is not used: no GPU was available
  to test it against this path, and a silent kernel switch between devices is what the project
  avoids (STYLE.md); the chunked torch path runs on CUDA as it does on the CPU.
- The body is run through the model's own forward (so DDP / FSDP2 wrappers see a forward) with
  `output_hidden_states=True`; during a no-grad pass that keeps every layer's output of the
  micro-batch alive until the forward returns (L x micro_batch x S x D, ~3 GB at paper size with 2
  rows), far below the logits it replaces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from refine.rl.positions import token_entropy

IGNORE_INDEX = -100
DEFAULT_LOGITS_CHUNK = 1024  # positions per LM-head chunk (NTP loss, evaluation)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The HF model inside a DDP wrapper (anything with `.module`); the model itself otherwise."""
    return getattr(model, "module", model)


def output_head(model: nn.Module) -> nn.Module:
    """The LM head (`get_output_embeddings`) of `model` or of the model a DDP wrapper holds."""
    head = unwrap_model(model).get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(unwrap_model(model)).__name__} has no output embeddings (LM head)")
    return head


def final_hidden(model: nn.Module, input_ids: Tensor) -> Tensor:
    """Final hidden states (the LM-head input, after the final norm): [B, S] -> [B, S, D].

    Only the last position's logits are computed by the forward (`logits_to_keep=1`)."""
    out = model(input_ids=input_ids, output_hidden_states=True, return_dict=True, logits_to_keep=1)
    return out.hidden_states[-1]


def _spans(length: int, size: int | None) -> list[tuple[int, int]]:
    """[lo, hi) pieces of range(length), each at most `size` long (None: one piece)."""
    size = length if size is None else size
    if size < 1:
        raise ValueError(f"chunk / micro-batch size must be >= 1, got {size}")
    return [(lo, min(lo + size, length)) for lo in range(0, length, size)]


@torch.no_grad()
def chunked_entropy(hidden: Tensor, head: nn.Module, chunk: int | None, micro_batch: int | None = None) -> Tensor:
    """Entropy of softmax(head(hidden)) per position, in fp32: hidden [B, S, D] -> [B, S].

    The head runs on micro_batch rows x chunk positions at a time (None: all of them)."""
    bsz, seq_len = hidden.shape[:2]
    entropy = torch.empty(bsz, seq_len, dtype=torch.float32, device=hidden.device)
    for r0, r1 in _spans(bsz, micro_batch):
        for lo, hi in _spans(seq_len, chunk):
            entropy[r0:r1, lo:hi] = token_entropy(head(hidden[r0:r1, lo:hi]))  # [rows, chunk]
    return entropy


@torch.no_grad()
def score_pass(
    model: nn.Module, input_ids: Tensor, micro_batch: int | None, chunk: int | None
) -> tuple[Tensor, Tensor]:
    """The no-grad scoring pass: (final hidden states [B, S, D], entropies [B, S] fp32).

    The body runs on `micro_batch` rows at a time; the head per `chunk` positions."""
    head = output_head(model)
    hiddens, entropies = [], []
    for r0, r1 in _spans(input_ids.shape[0], micro_batch):
        hidden = final_hidden(model, input_ids[r0:r1])  # [rows, S, D]
        hiddens.append(hidden)
        entropies.append(chunked_entropy(hidden, head, chunk))
    return torch.cat(hiddens), torch.cat(entropies)


def _chunk_cross_entropy(hidden: Tensor, targets: Tensor, head: nn.Module) -> tuple[Tensor, Tensor]:
    """(summed cross-entropy [], correct argmax predictions []) of one chunk: hidden [B, C, D]."""
    logits = head(hidden).float()  # [B, C, V]
    summed = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    correct = ((logits.argmax(-1) == targets) & (targets != IGNORE_INDEX)).sum()
    return summed, correct


def chunked_next_token_loss(
    hidden: Tensor, head: nn.Module, labels: Tensor, chunk: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Shifted next-token cross-entropy from final hidden states, the head applied per chunk.

    hidden: [B, S, D] (position t predicts labels[t+1]); labels: [B, S], -100 ignored.
    Returns (token-mean loss [], correct argmax predictions [], counted tokens []), as
    `refine.train.ntp.next_token_loss` does from the full logits. With grad enabled each chunk
    is checkpointed: its logits are recomputed in the backward instead of kept. A sequence that
    fits in one chunk is not checkpointed: its one chunk of logits is the most either way, and the
    recompute would cost a second head forward and cross-entropy per step (~8% of a pretraining
    step of the default study).
    """
    states, targets = hidden[:, :-1], labels[:, 1:]  # [B, S-1, D], [B, S-1]
    total = hidden.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    spans = _spans(targets.shape[1], chunk)
    for lo, hi in spans:
        if torch.is_grad_enabled() and len(spans) > 1:
            summed, right = checkpoint(_chunk_cross_entropy, states[:, lo:hi], targets[:, lo:hi], head,
                                       use_reentrant=False)  # fmt: skip
        else:
            summed, right = _chunk_cross_entropy(states[:, lo:hi], targets[:, lo:hi], head)
        total = total + summed
        correct = correct + right
    count = (targets != IGNORE_INDEX).sum()
    return total / count.clamp(min=1), correct, count
