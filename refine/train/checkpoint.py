"""Atomic training checkpoints: model, optimizer, loop position and every RNG, in one directory.

Layout under `<out_dir>/checkpoints/`:

    step-00000006-batch-00000006/   model.pt, optimizer.pt, rng.pt, state.json
    latest                          the name of the current checkpoint directory

A save writes a hidden temporary directory, renames it to its final name (`os.replace`), and only
then flips `latest` (written to a temporary file, fsynced, `os.replace`d). A crash at any point
before the flip leaves `latest` naming the previous, complete checkpoint; older directories are
removed only after the flip. There is no scheduler state: the learning rate is a pure function of
the optimizer step (`refine.train.optim.lr_factor`). The data-order position is the number of
batches consumed (`TrainState.batches`); the loop derives epoch and offset from it.

Under several processes (`refine.train.distributed`, given as `dist`), saving is a collective:
every rank calls it, the model and optimizer are gathered unsharded to rank 0 (keyed by parameter
name; the model file has the same keys as a single-process one), every rank's RNG states are
gathered into `rng.pt` (a list indexed by rank), and only rank 0 writes. Loading reads the same
files on every rank. A run resumes with the world size it was saved with.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from refine.train.distributed import DistInfo, full_state_dicts, gather_to_main, load_full_state_dicts

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"


@dataclass
class TrainState:
    """Where a run stands: everything besides tensors that a resumed run needs.

    step: optimizer steps taken. batches: batches fully handed to the method (data-order
    position). tokens: non-pad tokens in those batches. wall_time_s: training time so far,
    summed over resumes. last_metrics: the metrics of the last optimizer step.
    """

    step: int = 0
    batches: int = 0
    tokens: int = 0
    wall_time_s: float = 0.0
    last_metrics: dict[str, float] = field(default_factory=dict)


def _rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The directory of the current checkpoint of the run in `out_dir`, or None if it has none."""
    root = Path(out_dir) / CHECKPOINT_DIR
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is not a complete checkpoint")
    return path


def save_checkpoint(
    out_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    dist: DistInfo | None = None,
) -> Path:
    """Write a checkpoint of the current state atomically and make it the latest; returns its path.

    Must be called with no gradient pending (right after an optimizer step or before the first);
    the RNG states captured are those of the moment of the call. With several processes every rank
    calls it and rank 0 alone writes (see the module docstring).
    """
    root = Path(out_dir) / CHECKPOINT_DIR
    name = f"step-{state.step:08d}-batch-{state.batches:08d}"
    final = root / name
    if dist is not None and dist.enabled:
        model_state, optimizer_state = full_state_dicts(model, optimizer)
        rng = gather_to_main(_rng_state(), dist)
        if not dist.is_main:
            return final
    else:
        model_state, optimizer_state, rng = model.state_dict(), optimizer.state_dict(), _rng_state()
    root.mkdir(parents=True, exist_ok=True)
    if not final.exists():  # the same (step, batches) pair always holds the same content
        tmp = root / f".tmp-{name}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        torch.save(model_state, tmp / "model.pt")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(rng, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
        os.replace(tmp, final)
    pointer_tmp = root / f".{LATEST}.tmp"
    with open(pointer_tmp, "w") as f:
        f.write(name)
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer_tmp, root / LATEST)
    for stale in root.iterdir():
        if stale.is_dir() and stale.name != name:
            shutil.rmtree(stale)
    log.info("checkpoint saved: %s", final)
    return final


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, dist: DistInfo | None = None
) -> TrainState:
    """Load model and optimizer state from the checkpoint directory `path`, restore every RNG,
    and return the loop state. The model must already be on its training device (and wrapped or
    sharded, with several processes: every rank calls this)."""
    path = Path(path)
    distributed = dist is not None and dist.enabled
    rng = torch.load(path / "rng.pt", weights_only=True)
    saved_world = len(rng) if isinstance(rng, list) else 1
    world_size = dist.world_size if distributed else 1
    if saved_world != world_size:
        raise ValueError(
            f"{path} was saved by {saved_world} process(es); resume it with the same number, "
            f"not {world_size}"
        )
    if distributed:
        model_state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        load_full_state_dicts(model, optimizer, model_state, optimizer_state)
        _set_rng_state(rng[dist.rank])
    else:
        device = next(model.parameters()).device
        model.load_state_dict(torch.load(path / "model.pt", map_location=device, weights_only=True))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
        _set_rng_state(rng)
    state = TrainState(**json.loads((path / "state.json").read_text()))
    log.info("resumed from %s (optimizer step %d)", path, state.step)
    return state
