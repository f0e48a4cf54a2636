"""AdamW with weight decay on weight matrices only, and the warmup + decay learning-rate schedule.

Weight decay goes to parameters with two or more dimensions (linear and convolution weights,
an untied LM head) and not to norms, biases, per-head scalars or embedding tables: decaying
an embedding pulls the rows of rare tokens towards zero just because they are rarely updated.
Embeddings are found as the weights of `nn.Embedding` modules, so a tied LM head is not decayed
either. (A plain `AdamW(model.parameters())`, as RL trainers commonly build it, decays every
parameter; at REFINE's lr of 1e-6 and decay 0.01 the two differ by far less than training noise.)

The schedule is a pure function of the optimizer step, so resuming needs nothing but the step:
there is no scheduler object to save.

Master weights are fp32 (`MASTER_DTYPE`), whatever the checkpoint's dtype: the loaders
(`refine.models.registry.load_model`) upcast, bf16 exists only inside autocast, and
`build_optimizer` refuses trainable parameters of any other dtype. In bf16 an AdamW step at the
paper's lr 1e-6 is below half a unit in the last place of most weights (bf16 keeps 8 bits of
mantissa), so it is rounded away: on a tiny bf16 checkpoint one step changed 2% of the parameters,
in fp32 every parameter with a gradient changes (tested).

One optimizer step is `optimizer_step` (clip, set the lr, step, zero), whoever takes it: the
training loop (after its gradient accumulation and the all-reduce of `refine.train.distributed`),
test-time training and the benchmark (both through `apply_updates`: the backward of every loss a
method yields, and one `optimizer_step` per loss that carries metrics). A non-finite gradient norm
raises `NonFiniteLossError` before the step, so no weight is ever overwritten by NaN.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from refine.train.config import TrainConfig
from refine.train.distributed import scalar


class NonFiniteLossError(RuntimeError):
    """A loss or gradient norm was NaN or infinite; no optimizer step or checkpoint was made after it."""


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split the trainable parameters of `model` into a decayed and a non-decayed group."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():  # parameters() yields tied tensors once
        if not param.requires_grad:
            continue
        if param.ndim >= 2 and id(param) not in embedding_ids:
            decay.append(param)
        else:
            no_decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


MASTER_DTYPE = torch.float32


def require_fp32_masters(model: nn.Module) -> None:
    """ValueError naming the first trainable parameter whose dtype is not `MASTER_DTYPE`."""
    for name, param in model.named_parameters():
        if param.requires_grad and param.dtype not in (MASTER_DTYPE, torch.float64):  # float64: exactness tests
            raise ValueError(
                f"parameter {name} is {param.dtype}: training needs fp32 master weights (bf16 only inside "
                "autocast); load the model with refine.models.registry.load_model (dtype float32) or call "
                "model.float()"
            )


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `model` with the grouping of `parameter_groups` and the peak lr of `cfg`.
    The trainable parameters must be fp32 masters (`require_fp32_masters`)."""
    require_fp32_masters(model)
    return torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of `cfg.lr` for the optimizer step with 0-based index `step`.

    Linear warmup (step+1)/warmup_steps; then 1 until the decay starts at
    max(warmup_steps, decay_start * max_steps); then a cosine or linear ramp reaching
    `min_lr_ratio` at `max_steps`. "constant" never decays.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    start = max(cfg.warmup_steps, int(cfg.decay_start * cfg.max_steps))
    if step < start:
        return 1.0
    progress = min(1.0, (step - start) / max(1, cfg.max_steps - start))
    if cfg.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    max_norm: float | None = 1.0,
    *,
    lr: float | None = None,
    parameters: Iterable[Tensor] | None = None,
    step: int | None = None,
) -> float:
    """One optimizer step on the gradients already accumulated: clip their global norm to
    `max_norm` (None: no clipping, the norm is still measured), set the learning rate `lr` of every
    group (None: keep it), step, zero the gradients (set to None).

    parameters: those whose gradients are clipped (default: the optimizer's). step: the 0-based
    index of this step, named in the error. Returns the gradient norm before clipping; raises
    `NonFiniteLossError` (and makes no step) when it is NaN or infinite.
    """
    if parameters is None:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
    if lr is not None:
        set_lr(optimizer, lr)
    clip = math.inf if max_norm is None else max_norm
    grad_norm = scalar(torch.nn.utils.clip_grad_norm_(parameters, clip))
    if not math.isfinite(grad_norm):
        where = "" if step is None else f" at optimizer step {step + 1}"
        raise NonFiniteLossError(f"non-finite gradient norm {grad_norm}{where}")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def apply_updates(
    model: nn.Module,
    method,
    batch: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    max_norm: float | None = 1.0,
    autocast: contextlib.AbstractContextManager | None = None,
) -> list[dict[str, float]]:
    """Run `method.updates(model, batch)` (the loop's `Method` contract, `refine.train.loop`) with
    no accumulation over losses: backpropagate every yielded loss; a loss with metrics closes one
    `optimizer_step`, a loss with metrics None (a gradient micro-batch) joins the next one. The
    generator is advanced under `autocast` (None: none). Returns the metrics of every step, in order.
    """
    autocast = contextlib.nullcontext() if autocast is None else autocast
    updates: Iterator = method.updates(model, batch)
    steps = []
    while True:
        with autocast:
            item = next(updates, None)
        if item is None:
            return steps
        loss, metrics = item
        loss.backward()
        if metrics is None:
            continue
        optimizer_step(optimizer, max_norm)
        steps.append(metrics)
