"""The one training loop shared by every method (NTP, REFINE, nested post-training, TTT).

A method is a plug-in (`Method`): `updates(model, batch)` is a generator of `(loss, metrics)`
pairs. The contract:

- The loop backpropagates every yielded loss (scaled by 1/grad_accum) *before* asking the
  generator for the next one, and makes one optimizer step after every `grad_accum` losses,
  counted across batches. So a generator resumed after a yield sees the weights of the step just
  taken: REFINE yields one loss per mini-batch (m losses → m optimizer steps per batch, REFINE.md
  §1.6), nested post-training yields the inner loss on the context and then the outer loss on the
  answer, NTP yields one loss per batch (grad_accum > 1 accumulates consecutive batches).
- A yield `(loss, None)` is a gradient micro-batch: its loss is backpropagated (also scaled by
  1/grad_accum) but does not count towards `grad_accum`; it belongs to the next loss yielded with
  metrics, whose logged `loss` is the sum of the values of its micro-batches and its own. A method
  that splits a mini-batch into micro-batches weights their losses so that they sum to the
  mini-batch's loss, and reports the mini-batch's metrics with its last micro-batch (REFINE's
  `micro_batch_size`): the step's gradient is that of the whole mini-batch.
- `metrics` is a flat {name: float}. The row logged for an optimizer step holds the mean over its
  losses of `loss` (unscaled) and of each method metric, plus `lr`, `grad_norm` (before
  clipping), `tokens` (non-pad tokens of every batch drawn so far), `optimizer_steps` and
  `wall_time_s` (training time summed over resumes, evaluation excluded). Rows go to the
  tracker and to `out_dir/metrics.tsv`. Accumulated losses are averaged with equal weight, not
  re-weighted by their token counts. The step itself (clip, lr, step, zero; a non-finite gradient
  norm stops the run before it) is `refine.train.optim.optimizer_step`, the one that test-time
  training and the benchmark take too.

Data: `dataset[i]` is a dict of [T] LongTensors (input_ids, labels with -100 = ignore,
attention_mask). Each epoch is a permutation drawn by a `torch.Generator` seeded with
seed + epoch; the last incomplete batch of an epoch is dropped. The data-order position is the
number of batches consumed, so order is reproducible and resumable.

Checkpoints are written only at batch boundaries with no gradient pending, once at least
`checkpoint_every` steps have passed since the previous one, and at the end. A run started in an
`out_dir` that holds a checkpoint resumes from it (model, optimizer, RNGs, data position) and
reaches the same weights as an uninterrupted run, bitwise on CPU. `metrics.tsv` is cut back to the
checkpoint's step, and the kept rows are replayed into the tracker's (new) run, so that run holds
exactly the rows of the file; the interrupted run stays in the tracker as it was left. When
`max_steps` is reached in the middle of a batch, the rest of that batch is skipped.

Several processes (`torchrun`, a `DistInfo` from `refine.train.distributed.init_distributed`
passed as `dist`): the model is replicated or sharded per `cfg.parallel` ("ddp": gradients
averaged over ranks once per optimizer step, after its last backward; "fsdp": FSDP2) and handed
to the method as the HF model itself; rank r is seeded with seed + r. `batch_size` and the
method's `mini_batch_size` (an optional attribute: global rows per optimizer step, REFINE's
mini-batch) are global: rank r reads slice r of every global mini-batch of every global batch
(`refine.train.distributed.shard_rows`), so the union over ranks of each rank's j-th mini-batch
is the global mini-batch j, and optimizer steps per batch (and `max_steps`) mean the same at
every world size. Each loss and its method metrics are averaged over ranks (one all-reduce per
loss, so a non-finite loss on any rank stops every rank), `tokens` is summed over ranks;
gradients stay local for all but the last loss of an accumulated step. Rank 0 alone writes files
(checkpoints gathered unsharded, metrics.tsv, model/, final_metrics.json) and reports to the
tracker; the other ranks get a null tracker. `evaluate` runs on every rank (an FSDP forward needs
all of them). Every rank's method must yield the same number of losses per batch, with the same
metric names. A memory estimate (`refine.train.memory`) is logged before the first step.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from refine.tracking import NullTracker, Tracker, TSVLogger
from refine.train.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from refine.train.config import TrainConfig
from refine.train.distributed import (
    DistInfo,
    barrier,
    gradient_sync,
    mean_over_ranks,
    save_pretrained,
    shard_rows,
    sum_over_ranks,
    synchronize_gradients,
    wrap_model,
)
from refine.train.memory import log_memory_estimate, method_refine_config
from refine.train.optim import NonFiniteLossError, build_optimizer, lr_factor, optimizer_step

log = logging.getLogger(__name__)

Batch = dict[str, Tensor]
PAD_VALUES = {"input_ids": 0, "labels": -100, "attention_mask": 0}


class _NullTable:
    """Stands in for the `TSVLogger` on ranks other than 0: keeps no rows, writes nothing."""

    path = None
    rows: list = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass


class Method(Protocol):
    """A training method: turns one batch into a sequence of losses (see the module docstring).

    A method that splits its batch into mini-batches (one loss each) also has an attribute
    `mini_batch_size`: the global rows of each, None for the whole batch.
    """

    def updates(self, model: nn.Module, batch: Batch) -> Iterator[tuple[Tensor, dict[str, float]]]: ...


def collate(rows: list[Batch]) -> Batch:
    """Stack rows of [T_i] tensors into [B, max T_i], right-padding with `PAD_VALUES`."""
    length = max(row["input_ids"].shape[0] for row in rows)
    batch = {}
    for key in rows[0]:
        pad = PAD_VALUES.get(key, 0)
        batch[key] = torch.stack(
            [torch.nn.functional.pad(row[key], (0, length - row[key].shape[0]), value=pad) for row in rows]
        )
    return batch


def iterate_batches(
    dataset: Dataset, batch_size: int, seed: int, start: int = 0, rows: list[int] | None = None
) -> Iterator[Batch]:
    """Batches number `start`, `start+1`, … of the endless seeded epoch order (see module docstring).

    rows: the indices (in [0, batch_size)) of the rows of every batch to yield, in that order (a
    rank's shard, `refine.train.distributed.shard_rows`); None for all rows.
    """
    per_epoch = len(dataset) // batch_size
    if per_epoch == 0:
        raise ValueError(f"train.batch_size={batch_size} exceeds the dataset size {len(dataset)}")
    rows = list(range(batch_size)) if rows is None else rows
    epoch, offset = divmod(start, per_epoch)
    while True:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(offset, per_epoch):
            yield collate([dataset[int(order[i * batch_size + r])] for r in rows])
        epoch, offset = epoch + 1, 0


def seed_everything(seed: int) -> None:
    """Seed torch, python `random` and numpy's global generators."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = dict.fromkeys(k for row in rows for k in row)
    return {k: sum(row[k] for row in rows if k in row) / sum(k in row for row in rows) for k in keys}


def train(
    model: nn.Module,
    method: Method,
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    tracker: Tracker,
    device: str | torch.device = "cpu",
    *,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    dist: DistInfo | None = None,
) -> dict[str, float]:
    """Train `model` with `method` on `dataset` for `cfg.max_steps` optimizer steps; see module doc.

    Writes `out_dir/{metrics.tsv, checkpoints/, model/, final_metrics.json}` and returns the final
    metrics (the row of the last optimizer step). `evaluate(model)`, if given, runs every
    `cfg.eval_every` steps and after the last step; its metrics join that step's row. The caller
    owns the tracker run (`start_run` before, `end_run` after, with the params it wants); `train`
    logs the metric rows and the artifacts `metrics.tsv` and `final_metrics.json` into it.
    Raises `NonFiniteLossError` on a NaN/inf loss or gradient norm. `dist` (several processes,
    see the module docstring) decides the device; `device` is used when it is None. Every rank
    returns the same final metrics, after rank 0 has written its files.
    """
    out_dir = Path(out_dir)
    dist = dist if dist is not None else DistInfo(device=torch.device(device))
    device = dist.device
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        tracker = NullTracker()
    model.to(device)
    if cfg.gradient_checkpointing and method_refine_config(method) is not None:
        raise ValueError(
            "train.gradient_checkpointing=true with a REFINE update: its states come out of the grad "
            "forward, which checkpointed layers do not keep; use refine.micro_batch_size to bound its memory"
        )
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if dist.is_main:
        log_memory_estimate(model, cfg, len(dataset[0]["input_ids"]), dist.world_size, cfg.parallel, device,
                            refine=method_refine_config(method))  # fmt: skip
    model = wrap_model(model, dist, cfg.parallel)
    model.train()
    optimizer = build_optimizer(model, cfg)
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        seed_everything(cfg.seed + dist.rank)
        state = TrainState()
    else:
        state = load_checkpoint(checkpoint, model, optimizer, dist)
    if state.step >= cfg.max_steps:
        log.info("%s already holds a finished run (%d steps)", out_dir, state.step)
        return _write_outputs(model, out_dir, state.last_metrics, dist, cfg.save_dtype)

    tsv = TSVLogger(out_dir / "metrics.tsv", keep_up_to_step=state.step) if dist.is_main else _NullTable()
    for step, row in tsv.rows:  # a resumed run: the tracker's run gets the rows the file keeps
        tracker.log_metrics(row, step)
    _steps(model, method, dataset, cfg, out_dir, tracker, tsv, dist, state, optimizer, evaluate)
    final = _write_outputs(model, out_dir, state.last_metrics, dist, cfg.save_dtype)
    if dist.is_main:
        tracker.log_artifact(tsv.path)
        tracker.log_artifact(out_dir / "final_metrics.json")
    return final


def _write_outputs(
    model: nn.Module, out_dir: Path, final: dict[str, float], dist: DistInfo, save_dtype: str = "float32"
) -> dict:
    save_pretrained(model, out_dir / "model", dist, save_dtype)
    if dist.is_main:
        (out_dir / "final_metrics.json").write_text(json.dumps(final, indent=1, sort_keys=True))
    barrier(dist)  # no rank returns before the files are complete
    return dict(final)


def _steps(model, method, dataset, cfg, out_dir, tracker, tsv, dist, state, optimizer, evaluate) -> None:
    """The optimizer steps from `state` to `cfg.max_steps`; `state` is updated in place."""
    device = dist.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    started = time.perf_counter() - state.wall_time_s
    saved_step = state.step
    pending: list[dict[str, float]] = []  # rows of the losses accumulated for the next step
    optimizer.zero_grad(set_to_none=True)
    progress = tqdm(
        total=cfg.max_steps, initial=state.step, desc=out_dir.name, unit="step", mininterval=2,
        disable=not dist.is_main,
    )  # fmt: skip
    rows = shard_rows(cfg.batch_size, dist, getattr(method, "mini_batch_size", None))
    batches = iterate_batches(dataset, cfg.batch_size, cfg.seed, start=state.batches, rows=rows)
    while state.step < cfg.max_steps:
        batch = {k: v.to(device) for k, v in next(batches).items()}
        state.tokens += sum_over_ranks(int(batch["attention_mask"].sum()), dist)
        state.batches += 1
        updates = method.updates(model, batch)
        carried = 0.0  # the summed loss values of the micro-batches (metrics None) before the next loss
        while state.step < cfg.max_steps:
            with autocast:
                item = next(updates, None)
            if item is None:
                break
            loss, metrics = item
            names = sorted(metrics or {})
            value, *means = mean_over_ranks([loss.item(), *(metrics[k] for k in names)], dist)
            if not math.isfinite(value):
                raise NonFiniteLossError(f"non-finite loss {value} at optimizer step {state.step + 1}")
            closes = metrics is not None and len(pending) + 1 == cfg.grad_accum
            with gradient_sync(model, sync=closes):
                (loss / cfg.grad_accum).backward()
            if metrics is None:
                carried += value
                continue
            pending.append({"loss": carried + value, **dict(zip(names, means, strict=True))})
            carried = 0.0
            if len(pending) < cfg.grad_accum:
                continue
            synchronize_gradients(model, dist)
            lr = cfg.lr * lr_factor(state.step, cfg)
            grad_norm = optimizer_step(optimizer, cfg.grad_clip, lr=lr, parameters=parameters, step=state.step)
            state.step += 1
            state.wall_time_s = time.perf_counter() - started
            row = {
                **_mean_rows(pending),
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": float(state.tokens),
                "optimizer_steps": float(state.step),
                "wall_time_s": state.wall_time_s,
            }
            pending = []
            progress.update(1)
            progress.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
            last = state.step == cfg.max_steps
            periodic = cfg.eval_every is not None and state.step % cfg.eval_every == 0
            due_eval = evaluate is not None and (last or periodic)
            if due_eval:
                eval_started = time.perf_counter()
                row.update(evaluate(model))
                model.train()
                started += time.perf_counter() - eval_started  # wall_time_s counts training only
            state.last_metrics = row
            if due_eval or last or state.step % cfg.log_every == 0:
                tsv.log(row, state.step)
                tracker.log_metrics(row, state.step)
        updates.close()
        if not pending and state.step - saved_step >= cfg.checkpoint_every:
            save_checkpoint(out_dir, model, optimizer, state, dist)
            saved_step = state.step
    progress.close()
    save_checkpoint(out_dir, model, optimizer, state, dist)
