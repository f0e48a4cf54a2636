"""Test-time training (REFINE.md §2): adapt on the test prompts themselves, then decode.

Modes: `sft` (NTP on the prompt tokens) and `refine` (NTP + GRPO with the exact-match reward,
the authors' λ_pg 0.4), both through the same `Method` plug-ins as training.

Weight handling (`reset`):
- `example` (default, what TTT usually means): for every test item the weights start from the
  evaluated checkpoint and the optimizer starts fresh; `steps` passes over that item's prompt,
  then its answer is decoded;
- `cumulative` (the authors' released code): items are taken in batches of `batch_size` [8]; each
  batch is split into mini-batches of `mini_batch_size` [4] rows, one optimizer step each (2 steps
  per batch of 8, `steps` passes), and is then decoded. Neither the weights nor the optimizer are
  ever reset: one AdamW (its moments and step count) lives across the whole test set, so
  adaptation accumulates, as in the release.
The optimizer is AdamW (`lr`, betas (0.9, 0.999), `weight_decay` [0.01, verl's default] on weight
matrices only as in training, `refine.train.optim`), grad clip 1.0. Weights are fp32 masters
(`build_optimizer` refuses others) and the forward runs under bf16 autocast on CUDA, as in the
training loop.

Deviations from the authors' release:
- A REFINE update selects its rollout positions per mini-batch, from the weights of that
  mini-batch's step (fully on-policy, as in training, see `refine.train.refine`); the release
  draws the rollouts of both mini-batches before the first step.
- Weight decay skips norms, biases and embeddings (`refine.train.optim`); verl decays all.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from refine.names import TTT_RESETS
from refine.train.config import TTTConfig
from refine.train.loop import collate
from refine.train.optim import apply_updates, parameter_groups, require_fp32_masters

log = logging.getLogger(__name__)

RESETS = TTT_RESETS  # refine.names


def _prompt_batch(tokenizer, prompts: list[str], device) -> dict[str, torch.Tensor]:
    rows = []
    for text in prompts:
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        rows.append({"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)})
    return {k: v.to(device) for k, v in collate(rows).items()}


def ttt_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """The AdamW of test-time training (fp32 master weights required)."""
    require_fp32_masters(model)
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999))


def adapt(model, method, batch, steps: int, optimizer, mini_batch_size: int, metrics_out: list[dict]) -> int:
    """`steps` passes over `batch`, one optimizer step per loss the method yields on each mini-batch
    of `mini_batch_size` rows (`refine.train.optim.apply_updates`; a micro-batch's loss joins the
    next step). Returns the number of optimizer steps taken."""
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    rows = batch["input_ids"].shape[0]
    taken = 0
    model.train()
    optimizer.zero_grad(set_to_none=True)
    for _ in range(steps):
        for lo in range(0, rows, mini_batch_size):
            part = {k: v[lo : lo + mini_batch_size] for k, v in batch.items()}
            steps_metrics = apply_updates(model, method, part, optimizer, max_norm=1.0, autocast=autocast)
            metrics_out.extend(steps_metrics)
            taken += len(steps_metrics)
    model.eval()
    return taken


def ttt_generate(
    model,
    tokenizer,
    prompts: list[str],
    evaluate: Callable[[list[int]], list],
    method,
    steps: int,
    lr: float,
    reset: str = TTTConfig.reset,
    batch_size: int = TTTConfig.batch_size,
    mini_batch_size: int = TTTConfig.mini_batch_size,
    weight_decay: float = TTTConfig.weight_decay,
) -> tuple[list, list[dict]]:
    """Results for `prompts` with test-time training: `evaluate(indices)` decodes and scores those
    prompts with the adapted weights. Returns its results in prompt order and the per-update
    method metrics."""
    if reset not in RESETS:
        raise ValueError(f"eval.ttt.reset: expected one of {RESETS}, got {reset!r}")
    for key, value in (("steps", steps), ("batch_size", batch_size), ("mini_batch_size", mini_batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"eval.ttt.{key} must be an integer >= 1, got {value!r}")
    device = next(model.parameters()).device
    initial = copy.deepcopy(model.state_dict()) if reset == "example" else None
    group = 1 if reset == "example" else batch_size
    optimizer = None if reset == "example" else ttt_optimizer(model, lr, weight_decay)
    results: list = [None] * len(prompts)
    metrics: list[dict] = []
    for start in tqdm(range(0, len(prompts), group), desc=f"ttt ({reset})", leave=False):
        idx = list(range(start, min(start + group, len(prompts))))
        if initial is not None:
            model.load_state_dict(initial)
            optimizer = ttt_optimizer(model, lr, weight_decay)
        batch = _prompt_batch(tokenizer, [prompts[i] for i in idx], device)
        adapt(model, method, batch, steps, optimizer, mini_batch_size, metrics)
        with torch.no_grad():
            for i, result in zip(idx, evaluate(idx), strict=True):
                results[i] = result
    if initial is not None:
        model.load_state_dict(initial)
    return results, metrics
