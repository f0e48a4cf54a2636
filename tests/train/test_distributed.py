"""Multi-process training on CPU (gloo, 2 processes under torchrun, tests/train/dist_worker.py):
DDP and FSDP2 reach the weights of one process with the same global batch — NTP, and REFINE
mid-training, Nested REFINE post-training and TTT-REFINE's update for DeltaNet and LaCT
(tests/train/dist_cases.py) — with the same optimizer steps per batch (global batch and
mini-batch); kill + resume under 2 processes is bitwise equal to a straight 2-process run, and
only rank 0 writes files or talks to the tracker. Plus the single-process pieces: no torchrun →
no process group, batch shards, the gradient all-reduce, and gradient checkpointing (the memory
option that goes with large runs) changing no weight.

Tolerance against one process: NTP rtol 1e-5, atol 1e-6 on every weight after 6 AdamW steps at
lr 1e-2 (the 2-process gradient is the mean of two half-batch means: the same value up to float
summation order); REFINE rtol 1e-4, atol 1e-5 after 3 steps at lr 1e-2, with float64 models
(tests/train/dist_cases.py): measured max |Δw| ~1e-14 for DeltaNet, up to 3e-6 for LaCT (its per-token learning
rates and rotary angles are computed in float32); without the gradient all-reduce the DDP cases
miss by ~1e-2, and per-rank mini-batches change the step count. The 2-process runs among
themselves are compared bitwise.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from dist_cases import ARCHS, CASES, SEQ, run_case
from safetensors.torch import load_file
from test_loop import RowDataset, cfg, read_tsv, tiny_llama

from refine.tracking import NullTracker
from refine.train.checkpoint import latest_checkpoint
from refine.train.distributed import DistInfo, init_distributed, shard_rows
from refine.train.loop import iterate_batches, train
from refine.train.ntp import NTPMethod

WORKER = Path(__file__).with_name("dist_worker.py")
SETTINGS = dict(schedule="cosine", warmup_steps=2, decay_start=0.3)
RTOL, ATOL = 1e-5, 1e-6
REFINE_RTOL, REFINE_ATOL = 1e-4, 1e-5
REFINE_RUNS = [(c, a, s) for c in CASES if c != "sft_matched" for a in ARCHS for s in ("ddp", "fsdp")]


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


@pytest.fixture(scope="module")
def single_refine(tmp_path_factory):
    """The REFINE cases in one process, each run once when first asked: (model, out_dir)."""
    root, runs = tmp_path_factory.mktemp("single_refine"), {}

    def get(case: str, arch: str):
        if (case, arch) not in runs:
            out, threads = root / f"{case}-{arch}", torch.get_num_threads()
            torch.set_num_threads(1)  # as the workers: tiny models run 10x slower on contended threads
            try:
                runs[case, arch] = run_case(case, arch, out, NullTracker())[0], out
            finally:
                torch.set_num_threads(threads)
        return runs[case, arch]

    return get


def assert_weights_close(state: dict, model: torch.nn.Module, exact: bool = False, rtol=RTOL, atol=ATOL) -> None:
    expected = model.state_dict()
    assert state.keys() == expected.keys()
    for name, value in state.items():
        if exact:
            assert torch.equal(value, expected[name]), name
        else:
            torch.testing.assert_close(value, expected[name], rtol=rtol, atol=atol, msg=name)


def saved_weights(run_dir: Path, model: torch.nn.Module, checkpoint: bool = False) -> dict:
    """The weights rank 0 saved in run_dir/model (or, `checkpoint`, in the final checkpoint: the
    master weights in their own dtype), with the tied ones (saved once) filled in."""
    if checkpoint:
        saved = torch.load(latest_checkpoint(run_dir) / "model.pt", weights_only=True)
    else:
        saved = load_file(run_dir / "model" / "model.safetensors")
    tied = {k: v for k, v in model.state_dict().items() if k not in saved}
    return {**saved, **tied}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_reach_the_single_process_weights(launched, single, strategy):
    out, _ = launched
    model, single_out = single
    assert_weights_close(saved_weights(out / strategy, model), model)
    a, b = read_tsv(single_out), read_tsv(out / strategy)
    assert b["step"].tolist() == a["step"].tolist()
    assert b["tokens"].tolist() == a["tokens"].tolist()  # summed over ranks
    for key in ("loss", "ntp_accuracy", "grad_norm", "lr"):
        assert b[key].tolist() == pytest.approx(a[key].tolist(), rel=RTOL), key


@pytest.mark.parametrize("case,arch,strategy", REFINE_RUNS)
def test_refine_under_two_processes_reaches_the_single_process_weights(launched, single_refine, case, arch, strategy):
    out, reports = launched
    errors = json.loads((reports / "rank0.json").read_text())["errors"]
    run = f"{case}-{arch}-{strategy}"
    assert run not in errors, errors[run]
    model, single_out = single_refine(case, arch)
    weights = saved_weights(out / run, model, checkpoint=True)
    assert_weights_close(weights, model, rtol=REFINE_RTOL, atol=REFINE_ATOL)
    a, b = read_tsv(single_out), read_tsv(out / run)
    assert b["step"].tolist() == a["step"].tolist()
    assert b["tokens"].tolist() == a["tokens"].tolist()  # the same optimizer steps per batch
    for key in ("loss", "grad_norm"):
        assert b[key].tolist() == pytest.approx(a[key].tolist(), rel=1e-4), key
    (reward,) = [k for k in a.columns if k.endswith("rollout_cosine")]
    assert b[reward].dropna().tolist() == pytest.approx(a[reward].dropna().tolist(), rel=1e-4)


def test_global_mini_batches_give_the_same_optimizer_steps_per_batch(launched):
    """At world size 2, REFINE (global batch 4, global mini-batch 2) makes 2 optimizer steps per
    batch, as one process does, and the compute-matched SFT (global batch 2) has drawn the same
    tokens whenever REFINE completes a batch."""
    out, _ = launched
    for arch in ARCHS:
        refine = read_tsv(out / f"mid-{arch}-ddp")
        assert refine["step"].tolist() == [1, 2, 3]
        assert refine["tokens"].tolist() == [4 * SEQ, 4 * SEQ, 8 * SEQ]  # batch 1: steps 1-2; batch 2: step 3
    refine = read_tsv(out / "mid-delta_net-ddp")
    matched = read_tsv(out / "sft_matched-delta_net-ddp")
    assert matched["tokens"].tolist() == [2 * SEQ, 4 * SEQ, 6 * SEQ, 8 * SEQ]
    assert matched["tokens"][1] == refine["tokens"][1]  # step 2 ends REFINE's first batch
    nested = read_tsv(out / "nested-delta_net-ddp")  # inner REFINE step, then the answer step
    assert nested["tokens"].tolist() == [4 * SEQ, 4 * SEQ, 8 * SEQ]


def test_gradients_are_averaged_over_ranks(launched):
    """`synchronize_gradients` at 2 ranks: the mean of (rank + 1) everywhere; a gradient held by
    rank 0 only counts as zeros on rank 1; a parameter without gradients stays without (AdamW
    skips it, as with one process); small buckets change nothing."""
    _, reports = launched
    for rank in (0, 1):
        sync = json.loads((reports / f"rank{rank}.json").read_text())["sync"]
        assert sync["0.weight"] == [[1.5] * 3] * 2
        assert sync["0.bias"] == [0.5, 0.5]
        assert sync["1.weight"] is None and sync["1.bias"] is None


def test_ddp_replicas_stay_identical(launched):
    _, reports = launched
    refine_ddp = [f"{c}-{a}-ddp" for c, a, s in REFINE_RUNS if s == "ddp"]
    for run in ("ddp", "ddp_resume", *refine_ddp):
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


def test_rank_shards_take_a_slice_of_every_global_mini_batch():
    """Global batch 8, global mini-batch 4 (the last one short: batch 10), 2 ranks: rank r's j-th
    local mini-batch (2 rows) is slice r of the global mini-batch j."""
    assert shard_rows(8, DistInfo(rank=0, world_size=2), 4) == [0, 1, 4, 5]
    assert shard_rows(8, DistInfo(rank=1, world_size=2), 4) == [2, 3, 6, 7]
    assert shard_rows(10, DistInfo(rank=1, world_size=2), 4) == [2, 3, 6, 7, 9]
    assert shard_rows(8, DistInfo(rank=1, world_size=2)) == [4, 5, 6, 7]  # no mini-batch: contiguous
    with pytest.raises(ValueError, match=r"refine.mini_batch_size=3 .*world_size=2"):
        shard_rows(8, DistInfo(rank=0, world_size=2), 3)


def test_gradient_checkpointing_gives_the_same_weights(tmp_path):
    plain, checkpointed = tiny_llama(), tiny_llama()
    train(plain, NTPMethod(), RowDataset(8), cfg(max_steps=2), tmp_path / "a", NullTracker())
    settings = cfg(max_steps=2, gradient_checkpointing=True)
    train(checkpointed, NTPMethod(), RowDataset(8), settings, tmp_path / "b", NullTracker())
    assert checkpointed.is_activation_checkpointing
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=RTOL, atol=ATOL, msg=name)
