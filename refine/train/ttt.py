"""Test-time training (REFINE.md §2): adapt on the test prompts themselves, then decode.

Modes: `sft` (NTP on the prompt tokens) and `refine` (NTP + GRPO with the exact-match reward,
the authors' λ_pg 0.4), both through the same `Method` plug-ins as training.

Weight handling (`reset`):
- `example` (default, what TTT usually means): for every test item the weights start from the
  evaluated checkpoint, take `steps` updates on that item's prompt, then decode its answer;
- `cumulative` (the authors' released code): items are taken in batches of `batch_size`; each
  batch takes `steps` updates and is decoded, and the weights are never reset, so adaptation
  accumulates over the test set.
The optimizer (AdamW, `lr`, no weight decay, grad clip 1.0) is fresh for each reset.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from refine.train.loop import collate

log = logging.getLogger(__name__)

RESETS = ("example", "cumulative")


def _prompt_batch(tokenizer, prompts: list[str], device) -> dict[str, torch.Tensor]:
    rows = []
    for text in prompts:
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        rows.append({"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)})
    return {k: v.to(device) for k, v in collate(rows).items()}


def _adapt(model, method, batch, steps: int, lr: float, metrics_out: list[dict]) -> None:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        for loss, metrics in method.updates(model, batch):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            metrics_out.append(metrics)
    model.eval()


def ttt_generate(
    model,
    tokenizer,
    prompts: list[str],
    evaluate: Callable[[list[int]], list],
    method,
    steps: int,
    lr: float,
    reset: str = "example",
    batch_size: int = 8,
) -> tuple[list, list[dict]]:
    """Results for `prompts` with test-time training: `evaluate(indices)` decodes and scores those
    prompts with the adapted weights. Returns its results in prompt order and the per-update
    method metrics."""
    if reset not in RESETS:
        raise ValueError(f"eval.ttt.reset: expected one of {RESETS}, got {reset!r}")
    device = next(model.parameters()).device
    initial = copy.deepcopy(model.state_dict()) if reset == "example" else None
    group = 1 if reset == "example" else batch_size
    results: list = [None] * len(prompts)
    metrics: list[dict] = []
    for start in tqdm(range(0, len(prompts), group), desc=f"ttt ({reset})", leave=False):
        idx = list(range(start, min(start + group, len(prompts))))
        if initial is not None:
            model.load_state_dict(initial)
        _adapt(model, method, _prompt_batch(tokenizer, [prompts[i] for i in idx], device), steps, lr, metrics)
        with torch.no_grad():
            for i, result in zip(idx, evaluate(idx), strict=True):
                results[i] = result
    if initial is not None:
        model.load_state_dict(initial)
    return results, metrics
