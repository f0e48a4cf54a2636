"""Multi-process training under `torchrun`: process group, model wrapping, sharding, metric reduction.

The shared loop (`refine.train.loop.train`) takes a `DistInfo`; everything that differs between
one process and several goes through the functions here, so the loop reads the same in both:

- `init_distributed()` joins the process group from torchrun's variables (RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR/PORT; `env://`): gloo on CPU, nccl on CUDA with device cuda:LOCAL_RANK.
  Without those variables it returns the single-process `DistInfo`, and nothing is initialised.
- `wrap_model(model, dist, strategy)`: parameters and buffers are broadcast from rank 0 first, so
  every rank starts from rank 0's weights. "ddp" replicates the model: the module stays as it is
  (no `DistributedDataParallel` wrapper) and `synchronize_gradients` averages the gradients over
  ranks after the last backward of every optimizer step. "fsdp" shards parameters, gradients and
  AdamW states over ranks (FSDP2, `fully_shard` on every decoder layer — the classes in the HF
  model's `_no_split_modules` — and then on the root, in place) for models that do not fit
  replicated; its backward reduce-scatters the gradients, and every forward through the root
  gathers the parameters it needs.
- `shard_rows(batch_size, dist, mini_batch_size)`: which rows of every global batch this rank
  takes (below).
- `gradient_sync(model, sync)`: the context in which a loss is computed and backpropagated; with
  sync False (all but the last loss of an accumulated step) FSDP2 keeps gradients unreduced.
- `synchronize_gradients(model, dist)`: the all-reduce mean of the replicated model's gradients
  (a no-op for one process and under FSDP2).
- `mean_over_ranks(values)` / `sum_over_ranks(value)`: metric reduction (one all-reduce each).
- `full_state_dicts` / `load_full_state_dicts` (model + optimizer, unsharded, on rank 0 only) and
  `save_pretrained(model, path, dist)`: what rank 0 writes.

Why no `DistributedDataParallel`: DDP all-reduces gradients only for the backward of a forward
called through its wrapper, while REFINE drives the HF model itself (its config, its layers, the
state recorder, the rollout decodes: `refine.models.state`); calling the wrapped module bypasses
the all-reduce, and calling the wrapper with the recorder's mutable arguments is fragile (with
`device_ids` DDP copies list arguments). One explicit all-reduce per optimizer step has the same
result for every method and costs one pass over the gradients without overlap with the backward
(for the 1.3B model, ~5 GB of fp32 gradients over NVLink: tens of milliseconds, against seconds
of compute per step). Gradients that are None on every rank stay None (AdamW skips them); a
gradient that is None on some ranks only counts as zeros there.

Global batches (REFINE.md §7, the authors' `ppo_mini_batch_size` is global): `batch_size` and a
method's `mini_batch_size` count rows over all ranks. Every global mini-batch of mb rows (the
whole batch when the method has none) is split into world_size contiguous slices of mb/W rows,
and rank r takes slice r of each: so the union over ranks of every rank's mini-batch j is rows
[j·mb, (j+1)·mb) of the global batch, each rank makes batch/mini-batch optimizer steps per batch
(the same number as one process), and `max_steps` counts the same steps at any world size.
Divisibility by the world size is checked when the run starts, naming the key.

Equivalence with one process (tested, NTP and REFINE): the synchronised gradient is the mean over
ranks of each rank's loss gradient. A method whose loss is a mean over its rows with equal weight
per rank (NTP on fixed-length rows, as the packed pipeline data are; REFINE's token-mean NTP and
policy losses on equal-length rows) therefore gets the single-process gradient, up to float
summation order. With padding, ranks holding fewer tokens weigh more (as in any DDP trainer).
Random draws (REFINE's positions and rollouts) come from per-rank streams (the loop seeds rank r
with seed + r), so they equal one process's only where the method draws nothing (argmax
selection, greedy rollouts: what the equivalence test uses). Tested at 2 gloo processes against
one, for DDP and FSDP2, DeltaNet and LaCT: NTP, REFINE mid-training, Nested REFINE and the
TTT-REFINE update (tests/train/test_distributed.py; float64 models, weights after 3 steps within
rtol 1e-4 / atol 1e-5, the LaCT layer's float32 per-token learning rates being the largest
source of difference; without the gradient all-reduce every DDP case fails). Test-time training
itself (`refine.train.ttt`) adapts in one process: evaluation jobs are not launched under torchrun.

FSDP2 notes: every forward goes through the root module (its pre-forward hook gathers the root's
parameters, each decoder layer gathers its own); the root keeps its parameters gathered after
its forward (fully_shard's default for the root), which the LM-head calls of
`refine.train.chunked` rely on. Anything that outlives a layer's forward must not alias its
gathered parameters (LaCT's initial fast weights are copies) and mutable arguments must not be
lists (FSDP2 rebuilds them when it flattens a forward's inputs; see `refine.models.state`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import nn

from refine.train.config import PARALLEL_STRATEGIES

log = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank among world_size processes, GPU index on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this process does the side effects (files, tracker, logs)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process (collectives are needed)."""
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join torchrun's process group, or return the single-process `DistInfo` if not under torchrun.

    device: "cpu", "cuda" or None (CUDA if available). Under torchrun, CUDA means nccl and the
    device cuda:LOCAL_RANK; CPU means gloo. Calling it again returns the same information.
    """
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = torch.device(kind).type
    if not all(name in os.environ for name in TORCHRUN_VARIABLES):
        return DistInfo(device=torch.device(device or kind))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        run_device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        run_device, backend = torch.device("cpu"), "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)
        log.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, run_device)
    return DistInfo(rank, world_size, local_rank, run_device)


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of an HF model: the modules whose class is named in `_no_split_modules`."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(
            f"strategy 'fsdp': found no decoder layers in {type(model).__name__} "
            f"(its _no_split_modules is {sorted(names)})"
        )
    return layers


def wrap_model(model: nn.Module, dist: DistInfo, strategy: str = "ddp") -> nn.Module:
    """Prepare `model` (already on `dist.device`) for data-parallel training; unchanged for one process.

    Both strategies broadcast rank 0's parameters and buffers. "ddp" returns `model` itself (its
    gradients are averaged by `synchronize_gradients`); "fsdp" shards `model` in place (FSDP2)
    and returns it.
    """
    if strategy not in PARALLEL_STRATEGIES:
        raise ValueError(f"strategy must be one of {PARALLEL_STRATEGIES}, got {strategy!r}")
    if not dist.enabled:
        return model
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            torch_dist.broadcast(tensor, src=0)
    if strategy == "ddp":
        return model
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    return model


def is_fsdp(model: nn.Module) -> bool:
    """Whether `model` was sharded by FSDP2's `fully_shard`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def process_world_size() -> int:
    """The number of processes of the torch.distributed process group; 1 without one."""
    return torch_dist.get_world_size() if torch_dist.is_initialized() else 1


GRADIENT_BUCKET = 1 << 25  # elements per all-reduce (128 MB of fp32)


def synchronize_gradients(model: nn.Module, dist: DistInfo) -> None:
    """Average the gradients of a replicated model over ranks (call after the last backward of an
    optimizer step, before clipping). No-op for one process and under FSDP2 (its backward
    reduce-scatters). A collective: every rank must call it."""
    if not dist.enabled or is_fsdp(model):
        return
    params = [p for p in model.parameters() if p.requires_grad]
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int64)
    has_grad = has_grad.to(_collective_device(dist))
    torch_dist.all_reduce(has_grad)
    grads = []
    for param, count in zip(params, has_grad.tolist(), strict=True):
        if count == 0:
            continue  # no rank has a gradient: AdamW skips the parameter, as with one process
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        grads.append(param.grad)
    buckets: dict[tuple, list[list[torch.Tensor]]] = {}
    for grad in grads:  # consecutive gradients of one dtype and device, up to GRADIENT_BUCKET elements
        group = buckets.setdefault((grad.dtype, grad.device), [[]])
        if group[-1] and sum(g.numel() for g in group[-1]) + grad.numel() > GRADIENT_BUCKET:
            group.append([])
        group[-1].append(grad)
    for group in buckets.values():
        for bucket in group:
            flat = torch.cat([g.reshape(-1) for g in bucket])
            torch_dist.all_reduce(flat)
            flat /= dist.world_size
            offset = 0
            for grad in bucket:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()


def shard_rows(batch_size: int, dist: DistInfo, mini_batch_size: int | None = None) -> list[int]:
    """The rows (indices into every global batch of `batch_size` rows) that this rank takes: slice
    r of every global mini-batch (see the module docstring); contiguous when `mini_batch_size` is
    None (one mini-batch: the whole batch)."""
    mb = mini_batch_size or batch_size
    checks = (("train.batch_size", batch_size), ("refine.mini_batch_size", mini_batch_size))
    for key, value in checks:
        if value is not None and value % dist.world_size:
            raise ValueError(
                f"{key}={value} must be divisible by the number of processes (world_size="
                f"{dist.world_size}): each rank takes an equal share of every global (mini-)batch"
            )
    rows = []
    for lo in range(0, batch_size, mb):
        size = min(mb, batch_size - lo) // dist.world_size  # the last mini-batch may be shorter
        rows.extend(range(lo + dist.rank * size, lo + (dist.rank + 1) * size))
    return rows


@contextlib.contextmanager
def gradient_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Compute and backpropagate a loss in here; under FSDP2, `sync=False` keeps its gradients
    unreduced on this rank (a replicated model is synchronised once per step instead)."""
    if is_fsdp(model):
        model.set_requires_gradient_sync(sync)
    yield


def mean_over_ranks(values: list[float], dist: DistInfo) -> list[float]:
    """The mean over ranks of each value (every rank passes the same number of values)."""
    if not dist.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(dist))
    torch_dist.all_reduce(tensor)
    return (tensor / dist.world_size).tolist()


def sum_over_ranks(value: int, dist: DistInfo) -> int:
    """The sum over ranks of an integer (token counts)."""
    if not dist.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=_collective_device(dist))
    torch_dist.all_reduce(tensor)
    return int(tensor.item())


def any_rank(flag: bool, dist: DistInfo) -> bool:
    """Whether `flag` is true on at least one rank."""
    return sum_over_ranks(int(flag), dist) > 0


def gather_to_main(obj, dist: DistInfo) -> list | None:
    """[obj of rank 0, obj of rank 1, …] on rank 0, None elsewhere (pickled objects)."""
    if not dist.enabled:
        return [obj]
    gathered = [None] * dist.world_size if dist.is_main else None
    torch_dist.gather_object(obj, gathered, dst=0)
    return gathered


def scalar(tensor: torch.Tensor) -> float:
    """The value of a one-element tensor; a DTensor (an FSDP gradient norm) is gathered first."""
    from torch.distributed.tensor import DTensor

    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).item()


def barrier(dist: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if dist.enabled:
        torch_dist.barrier()


def _collective_device(dist: DistInfo) -> torch.device:
    return dist.device if dist.device.type == "cuda" else torch.device("cpu")


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded CPU state dicts of model and optimizer, keyed by parameter names, complete on
    rank 0 (other ranks get empty dicts). A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer, options=options)


def load_full_state_dicts(
    model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict
) -> None:
    """Load the dicts of `full_state_dicts` into a wrapped or sharded model on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    options = StateDictOptions(full_state_dict=True)
    set_state_dict(
        model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=options
    )


def save_pretrained(model: nn.Module, path: str | Path, dist: DistInfo, dtype: str = "float32") -> None:
    """`save_pretrained` of the (unsharded) HF model in `dtype` (`refine.models.registry.save_model`),
    written by rank 0 only."""
    from refine.models.registry import save_model

    inner = model
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=options)  # a collective
        if dist.is_main:
            save_model(inner, path, dtype, state_dict=state)
        return
    if dist.is_main:
        save_model(inner, path, dtype)
