"""Next-token prediction: the loss, the `NTPMethod` plug-in for the shared loop, and NTP evaluation.

The loss is the token mean of the cross-entropy over every position whose *shifted* label is
not -100 (position t predicts labels[t+1]), as in Hugging Face causal LMs. It is computed here
from the logits rather than taken from `model(labels=...)`, so that the accuracy comes from the
same logits and the same mask. `NTPMethod` is the NTP-SFT baseline of mid-training (REFINE.md §2,
lambda_pg = 0) and the `L_ntp` term of REFINE: one loss per batch, one optimizer step per batch
(or per `grad_accum` batches).

Batches are right-padded (`collate`), so no attention mask is passed to the model: a causal
model's outputs at real tokens never depend on the pads after them, and fla's layers would
otherwise unpad every batch into the slower variable-length path. Pads are excluded from the
loss by their -100 labels.

Memory: `NTPMethod` never materialises the full [B, S, V] logits. The forward returns the final
hidden states (logits of the last position only) and the LM head + cross-entropy run per chunk
of `logits_chunk` positions under an activation checkpoint (`refine.train.chunked`), so neither
the forward nor the backward holds more than B x chunk x V logits; equal to the unchunked loss
and gradients to fp32 rounding (tested). `logits_chunk=None` is the unchunked reference path.
fla's fused linear cross-entropy (CUDA-only Triton) is not used; see `refine.train.chunked`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from refine.train.chunked import DEFAULT_LOGITS_CHUNK, chunked_next_token_loss, final_hidden, output_head
from refine.train.loop import Batch, collate

IGNORE_INDEX = -100


def next_token_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Shifted next-token cross-entropy.

    logits: [B, T, V]; labels: [B, T] with -100 where ignored.
    Returns (token-mean loss [], number of correct argmax predictions [], number of tokens []);
    the loss is 0 (and still differentiable) when no token counts.
    """
    logits = logits[:, :-1].float()  # [B, T-1, V]
    targets = labels[:, 1:]  # [B, T-1]
    mask = targets != IGNORE_INDEX
    losses = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    count = mask.sum()
    loss = losses.sum() / count.clamp(min=1)
    correct = ((logits.argmax(-1) == targets) & mask).sum()
    return loss, correct, count


class NTPMethod:
    """One NTP loss per batch; metrics `ntp_loss` and `ntp_accuracy` (next-token argmax accuracy).

    logits_chunk: positions per LM-head + cross-entropy chunk (None: the full logits at once)."""

    logits_chunk: int | None = DEFAULT_LOGITS_CHUNK  # also for subclasses that skip __init__

    def __init__(self, logits_chunk: int | None = DEFAULT_LOGITS_CHUNK):
        if logits_chunk is not None and (not isinstance(logits_chunk, int) or logits_chunk < 1):
            raise ValueError(f"logits_chunk must be an integer >= 1 or None, got {logits_chunk!r}")
        self.logits_chunk = logits_chunk

    def updates(self, model: nn.Module, batch: Batch) -> Iterator[tuple[Tensor, dict[str, float]]]:
        if self.logits_chunk is None:
            logits = model(input_ids=batch["input_ids"]).logits
            loss, correct, count = next_token_loss(logits, batch["labels"])
        else:
            hidden = final_hidden(model, batch["input_ids"])  # [B, S, D]
            loss, correct, count = chunked_next_token_loss(hidden, output_head(model), batch["labels"],
                                                           self.logits_chunk)  # fmt: skip
        accuracy = correct.item() / max(1, count.item())
        yield loss, {"ntp_loss": loss.item(), "ntp_accuracy": accuracy}


@torch.no_grad()
def evaluate_ntp(
    model: nn.Module, dataset: Dataset, batch_size: int, logits_chunk: int | None = DEFAULT_LOGITS_CHUNK
) -> dict[str, float]:
    """Token-mean NTP loss and accuracy of `model` over every row of `dataset`, in order, on the
    model's device.

    Returns {"val_loss", "val_accuracy", "val_tokens"}. Tokens are weighted equally across
    batches (the sums are accumulated, not per-batch means). The model's train/eval mode is
    restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"evaluate_ntp: batch_size must be >= 1, got {batch_size!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64)
    total_correct = 0
    total_tokens = 0
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: v.to(device) for k, v in collate(rows).items()}
        hidden = final_hidden(model, batch["input_ids"])  # [B, S, D]
        loss, correct, count = chunked_next_token_loss(hidden, output_head(model), batch["labels"], logits_chunk)
        total_loss += loss.double().cpu() * count.item()
        total_correct += correct.item()
        total_tokens += count.item()
    model.train(was_training)
    denominator = max(1, total_tokens)
    return {
        "val_loss": total_loss.item() / denominator,
        "val_accuracy": total_correct / denominator,
        "val_tokens": float(total_tokens),
    }
