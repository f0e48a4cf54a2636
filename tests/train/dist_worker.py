"""The process body of tests/train/test_distributed.py, launched as `torchrun --nproc_per_node=2
dist_worker.py OUT REPORTS`. Every rank trains the same runs of the tiny Llama of test_loop.py:

- OUT/ddp: 6 steps with DDP; OUT/fsdp: the same with FSDP2;
- OUT/ddp_resume: the DDP run killed in its 5th batch (after the checkpoint of step 3), then
  resumed from a differently initialised model, in the same process group;
- OUT/<case>-<arch>-<strategy>: the REFINE cases of tests/train/dist_cases.py (REFINE
  mid-training, Nested REFINE post-training, TTT-REFINE's update) for the tiny DeltaNet and LaCT,
  under DDP and FSDP2, and the compute-matched SFT (DeltaNet, DDP);
- a probe of `synchronize_gradients`: gradients (rank + 1) on every rank, a gradient on rank 0
  only, a parameter without gradients anywhere, buckets of 4 elements (report key "sync").

Ranks other than 0 record, with an audit hook, every file they create, write, rename or remove
under OUT (as a control, they then write OUT/control-rank<r>.txt), and every tracker call; each
rank writes REPORTS/rank<r>.json and its final weights REPORTS/rank<r>-<run>.pt (REPORTS lies
outside OUT).
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dist_cases import ARCHS, CASES, run_case  # noqa: E402
from test_loop import KillAtBatch, Killed, RowDataset, cfg, tiny_llama  # noqa: E402

import refine.train.distributed as distributed  # noqa: E402
from refine.train.distributed import init_distributed, shutdown_distributed  # noqa: E402
from refine.train.loop import train  # noqa: E402
from refine.train.ntp import NTPMethod  # noqa: E402

WRITE_EVENTS = ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "os.unlink")


class RecordingTracker:
    def __init__(self):
        self.calls = []

    def start_run(self, name, params, tags):
        self.calls.append("start_run")

    def log_metrics(self, metrics, step):
        self.calls.append("log_metrics")

    def log_artifact(self, path):
        self.calls.append("log_artifact")

    def end_run(self, status="FINISHED"):
        self.calls.append("end_run")


def sync_probe(dist) -> dict:
    """The gradients after `synchronize_gradients` of a model whose ranks hold different ones."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].weight.grad = torch.full((2, 3), float(dist.rank + 1))
    if dist.rank == 0:
        model[0].bias.grad = torch.ones(2)
    bucket, distributed.GRADIENT_BUCKET = distributed.GRADIENT_BUCKET, 4  # several buckets
    try:
        distributed.synchronize_gradients(model, dist)
    finally:
        distributed.GRADIENT_BUCKET = bucket
    return {n: None if p.grad is None else p.grad.tolist() for n, p in model.named_parameters()}


def main(out: Path, reports: Path) -> None:
    torch.set_num_threads(1)
    dist = init_distributed("cpu")
    writes = []
    if not dist.is_main:
        root = str(out.resolve())

        def audit(event, args):
            if event == "open" and isinstance(args[0], str | os.PathLike):
                mode = args[1] or "r"
                if any(c in mode for c in "wax+") and str(Path(args[0]).resolve()).startswith(root):
                    writes.append([event, str(args[0])])
            elif event in WRITE_EVENTS and any(str(a).startswith(root) for a in args if isinstance(a, str)):
                writes.append([event, [str(a) for a in args]])

        sys.addaudithook(audit)

    data = RowDataset(12)
    settings = dict(schedule="cosine", warmup_steps=2, decay_start=0.3)
    tracker = RecordingTracker()
    finals, runs, errors = {}, {}, {}
    for name, parallel in (("ddp", "ddp"), ("fsdp", "fsdp")):
        model = tiny_llama()
        finals[name] = train(
            model, NTPMethod(), data, cfg(parallel=parallel, **settings), out / name, tracker, dist=dist
        )
        runs[name] = model
    try:
        train(tiny_llama(), KillAtBatch(5), data, cfg(**settings), out / "ddp_resume", tracker, dist=dist)
        raise AssertionError("the killed run was not killed")
    except Killed:
        pass
    resumed = tiny_llama(seed=7)
    finals["ddp_resume"] = train(
        resumed, NTPMethod(), data, cfg(**settings), out / "ddp_resume", tracker, dist=dist
    )
    runs["ddp_resume"] = resumed
    for case in CASES:
        for arch in ARCHS if case != "sft_matched" else ARCHS[:1]:
            for parallel in ("ddp", "fsdp") if case != "sft_matched" else ("ddp",):
                name = f"{case}-{arch}-{parallel}"
                try:  # a failing case (the same error on every rank) fails its own test only
                    runs[name], finals[name] = run_case(case, arch, out / name, tracker, parallel, dist=dist)
                except Exception as err:  # noqa: BLE001
                    errors[name] = f"{type(err).__name__}: {err}"
    if not dist.is_main:  # a positive control: the hook sees a write of this rank
        (out / f"control-rank{dist.rank}.txt").write_text("written by a non-zero rank on purpose")
    reports.mkdir(parents=True, exist_ok=True)
    for name, model in runs.items():
        if not name.endswith("fsdp"):  # FSDP parameters are this rank's shards; rank 0's model/ holds them whole
            torch.save(model.state_dict(), reports / f"rank{dist.rank}-{name}.pt")
    report = {"rank": dist.rank, "writes": writes, "tracker_calls": tracker.calls, "finals": finals,
              "errors": errors, "sync": sync_probe(dist)}
    (reports / f"rank{dist.rank}.json").write_text(json.dumps(report))
    shutdown_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
