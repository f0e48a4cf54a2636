"""Multi-process training on CPU (gloo, 2 processes under torchrun, tests/train/dist_worker.py):
DDP and FSDP2 reach the weights of one process with the same global batch, kill + resume under
2 processes is bitwise equal to a straight 2-process run, and only rank 0 writes files or talks to
the tracker. Plus the single-process pieces: no torchrun → no process group, batch shards, and
gradient checkpointing (the memory option that goes with large runs) changing no weight.

Tolerance against one process: rtol 1e-5, atol 1e-6 on every weight after 6 AdamW steps at
lr 1e-2 (the 2-process gradient is the mean of two half-batch means: the same value up to float
summation order); the 2-process runs among themselves are compared bitwise.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_loop import RowDataset, cfg, read_tsv, tiny_llama

from refine.tracking import NullTracker
from refine.train.distributed import DistInfo, init_distributed, shard_rows
from refine.train.loop import iterate_batches, train
from refine.train.ntp import NTPMethod

WORKER = Path(__file__).with_name("dist_worker.py")
SETTINGS = dict(schedule="cosine", warmup_steps=2, decay_start=0.3)
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Run the worker once under `torchrun --nproc_per_node=2`; (OUT, REPORTS)."""
    root = tmp_path_factory.mktemp("dist")
    out, reports = root / "out", root / "reports"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*command, str(WORKER), str(out), str(reports)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out, reports


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The same run in one process: (model, out_dir)."""
    out = tmp_path_factory.mktemp("single")
    model = tiny_llama()
    train(model, NTPMethod(), RowDataset(12), cfg(**SETTINGS), out, NullTracker())
    return model, out


def assert_weights_close(state: dict, model: torch.nn.Module, exact: bool = False) -> None:
    expected = model.state_dict()
    assert state.keys() == expected.keys()
    for name, value in state.items():
        if exact:
            assert torch.equal(value, expected[name]), name
        else:
            torch.testing.assert_close(value, expected[name], rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_reach_the_single_process_weights(launched, single, strategy):
    out, _ = launched
    model, single_out = single
    saved = load_file(out / strategy / "model" / "model.safetensors")
    tied = {k: v for k, v in model.state_dict().items() if k not in saved}  # a tied head is saved once
    assert_weights_close({**saved, **tied}, model)
    a, b = read_tsv(single_out), read_tsv(out / strategy)
    assert b["step"].tolist() == a["step"].tolist()
    assert b["tokens"].tolist() == a["tokens"].tolist()  # summed over ranks
    for key in ("loss", "ntp_accuracy", "grad_norm", "lr"):
        assert b[key].tolist() == pytest.approx(a[key].tolist(), rel=RTOL), key


def test_ddp_replicas_stay_identical(launched):
    _, reports = launched
    for run in ("ddp", "ddp_resume"):
        rank0 = torch.load(reports / f"rank0-{run}.pt", weights_only=True)
        rank1 = torch.load(reports / f"rank1-{run}.pt", weights_only=True)
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), run


def test_kill_and_resume_under_two_processes_equals_a_straight_run(launched):
    out, reports = launched
    straight = torch.load(reports / "rank0-ddp.pt", weights_only=True)
    resumed = torch.load(reports / "rank0-ddp_resume.pt", weights_only=True)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    a, b = read_tsv(out / "ddp"), read_tsv(out / "ddp_resume")
    pd.testing.assert_frame_equal(a.drop(columns="wall_time_s"), b.drop(columns="wall_time_s"))
    rng = torch.load(next((out / "ddp_resume" / "checkpoints").glob("step-*")) / "rng.pt", weights_only=True)
    assert isinstance(rng, list) and len(rng) == 2  # every rank's RNG states
    assert not torch.equal(rng[0]["torch"], rng[1]["torch"])  # rank r is seeded with seed + r


def test_only_rank_zero_writes_files_and_tracks(launched):
    out, reports = launched
    rank0 = json.loads((reports / "rank0.json").read_text())
    rank1 = json.loads((reports / "rank1.json").read_text())
    assert rank1["writes"] == [["open", str(out / "control-rank1.txt")]]  # the control write only
    assert rank1["tracker_calls"] == []
    assert rank0["tracker_calls"].count("log_metrics") >= 12 and "log_artifact" in rank0["tracker_calls"]
    for run, final in rank0["finals"].items():  # every rank returns the same final metrics
        final.pop("wall_time_s"), rank1["finals"][run].pop("wall_time_s")
        assert final == rank1["finals"][run], run


def test_without_torchrun_there_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo() and info.is_main and not info.enabled
    assert not torch.distributed.is_initialized()


def test_rank_shards_partition_every_global_batch_in_order():
    data = RowDataset(12)
    full = iterate_batches(data, 4, seed=3, start=2)
    shards = [
        iterate_batches(data, 4, seed=3, start=2, rows=shard_rows(4, DistInfo(rank=r, world_size=2)))
        for r in range(2)
    ]
    for _ in range(3):  # crosses an epoch boundary
        expected = next(full)["input_ids"]
        assert torch.equal(torch.cat([next(s)["input_ids"] for s in shards]), expected)
    with pytest.raises(ValueError, match=r"batch_size=6 .*world_size=4"):
        shard_rows(6, DistInfo(rank=0, world_size=4))


def test_gradient_checkpointing_gives_the_same_weights(tmp_path):
    plain, checkpointed = tiny_llama(), tiny_llama()
    train(plain, NTPMethod(), RowDataset(8), cfg(max_steps=2), tmp_path / "a", NullTracker())
    settings = cfg(max_steps=2, gradient_checkpointing=True)
    train(checkpointed, NTPMethod(), RowDataset(8), settings, tmp_path / "b", NullTracker())
    assert checkpointed.is_activation_checkpointing
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=RTOL, atol=ATOL, msg=name)
