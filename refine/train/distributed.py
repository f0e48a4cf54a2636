"""Multi-process training under `torchrun`: process group, model wrapping, sharding, metric reduction.

The shared loop (`refine.train.loop.train`) takes a `DistInfo`; everything that differs between
one process and several goes through the functions here, so the loop reads the same in both:

- `init_distributed()` joins the process group from torchrun's variables (RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR/PORT; `env://`): gloo on CPU, nccl on CUDA with device cuda:LOCAL_RANK.
  Without those variables it returns the single-process `DistInfo`, and nothing is initialised.
- `wrap_model(model, dist, strategy)`: "ddp" replicates the model (`DistributedDataParallel`,
  gradients averaged over ranks in its backward hooks); "fsdp" shards parameters, gradients and
  AdamW states over ranks (FSDP2, `fully_shard` on every decoder layer — the classes in the HF
  model's `_no_split_modules` — and then on the root) for models that do not fit replicated.
  Parameters are broadcast from rank 0 first, so every rank starts from rank 0's weights.
- `shard_rows(batch_size, dist)`: rank r of W takes the contiguous rows [r·B/W, (r+1)·B/W) of
  every global batch of B rows, so the union over ranks is the single-process batch, in order.
- `gradient_sync(model, sync)`: the context in which a loss is computed and backpropagated; with
  sync False (all but the last loss of an accumulated step) gradients stay local.
- `mean_over_ranks(values)` / `sum_over_ranks(value)`: metric reduction (one all-reduce each).
- `full_state_dicts` / `load_full_state_dicts` (model + optimizer, unsharded, on rank 0 only) and
  `save_pretrained(model, path, dist)`: what rank 0 writes.

Equivalence with one process (tested): the DDP gradient is the mean over ranks of each rank's
loss gradient. A method whose loss is a mean over its rows with equal weight per rank (NTP on
fixed-length rows, as the packed pipeline data are) therefore gets the single-process gradient,
up to float summation order. With padding, ranks holding fewer tokens weigh more (as in any DDP
trainer). REFINE splits each rank's shard into its own mini-batches, so its mini-batch j is the
union over ranks of their j-th mini-batches rather than rows [j·mb, (j+1)·mb) of the global
batch; rollouts are sampled from per-rank random streams (the loop seeds rank r with seed + r).
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
from torch.nn.parallel import DistributedDataParallel

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
    """Wrap `model` (already on `dist.device`) for data-parallel training; unchanged for one process.

    "ddp" returns a `DistributedDataParallel`; "fsdp" shards `model` in place (FSDP2) and returns it.
    """
    if strategy not in PARALLEL_STRATEGIES:
        raise ValueError(f"strategy must be one of {PARALLEL_STRATEGIES}, got {strategy!r}")
    if not dist.enabled:
        return model
    if strategy == "ddp":  # buffers synced once here, not per forward: REFINE's ranks differ in forwards
        device_ids = [dist.local_rank] if dist.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)
    from torch.distributed.fsdp import fully_shard

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            torch_dist.broadcast(tensor, src=0)
    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The HF model inside a DDP wrapper (FSDP2 shards in place: the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_fsdp(model: nn.Module) -> bool:
    """Whether `model` was sharded by FSDP2's `fully_shard`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_rows(batch_size: int, dist: DistInfo) -> tuple[int, int]:
    """The [start, stop) rows of every global batch of `batch_size` rows that this rank takes."""
    if batch_size % dist.world_size:
        raise ValueError(
            f"train.batch_size={batch_size} must be divisible by the number of processes "
            f"(world_size={dist.world_size}): each rank takes an equal shard of every batch"
        )
    per_rank = batch_size // dist.world_size
    return dist.rank * per_rank, (dist.rank + 1) * per_rank


@contextlib.contextmanager
def gradient_sync(model: nn.Module, sync: bool) -> Iterator[None]:
    """Compute and backpropagate a loss in here; `sync=False` keeps its gradients on this rank."""
    if isinstance(model, DistributedDataParallel) and not sync:
        with model.no_sync():
            yield
        return
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
    """`save_pretrained` of the (unwrapped, unsharded) HF model in `dtype` (`refine.models.registry.save_model`),
    written by rank 0 only."""
    from refine.models.registry import save_model

    inner = unwrap(model)
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=options)  # a collective
        if dist.is_main:
            save_model(inner, path, dtype, state_dict=state)
        return
    if dist.is_main:
        save_model(inner, path, dtype)
