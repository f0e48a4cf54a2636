"""One paper-size measurement on one GPU: peak memory and time of one REFINE and one NTP update.

The model is fla's DeltaNet with the 1.3B configuration (DeltaNetConfig's defaults: hidden 2048,
24 layers, 16 heads, SwiGLU, short conv 4, fused norm / SwiGLU kernels; vocab 32000), randomly
initialised on the GPU, fp32 master weights, AdamW, bf16 autocast as the training loop runs it.
The rows per GPU are read at run time from the resolved paper config (config/config.yaml merged
with config/paper.yaml, as Snakemake merges them; `--config` to point elsewhere), for W =
`gpus_per_job` processes. One *update* is what one GPU does for one global batch of the config,
as `refine.train.loop` runs it (the method's losses under bf16 autocast, backward, clip, AdamW):

- `refine` (`midtrain.refine`): one REFINE update of the per-GPU batch (train.batch_size / W rows):
  its scoring pass, then per mini-batch (refine.mini_batch_size / W rows) one optimizer step, in
  gradient micro-batches of refine.micro_batch_size rows when the config sets that key;
- `ntp` (`midtrain.sft`, the authors' baseline): train.grad_accum forwards of train.batch_size / W
  rows, one optimizer step; gradient checkpointing as the section says;
- `ntp_matched` (`midtrain.sft_matched`, the compute-matched baseline), when the config has it.

Each case runs `--updates` updates (default 2: the first includes Triton's compilation and
autotuning, the later ones give the warm time per update). Reported per case: peak
`torch.cuda.max_memory_allocated` over its updates (parameters, gradients and AdamW moments
included), the time of the first and the mean of the later updates, the optimizer steps per
update, and `refine.train.memory.estimate_memory` for the same setting on one process
(`est_*`: the per-GPU rows at W = 1, so no sharding and no DDP bucket; what the peak is compared
with) and for the paper's W processes under the section's `train.parallel` (`est_paper_total_gib`).
A case that runs out of memory is recorded as `oom` and the next one runs; an `oom` case is
followed by a fallback at one row per forward (REFINE: micro_batch_size 1; NTP: 1-row batches with
the per-GPU rows as grad_accum), so the output says what does fit. `--time-budget` seconds
after the start no new case is begun (status `skipped_time`), nor a further update of a case whose
last update would end past it; `--case-budget` seconds bounds each case the same way, so a slow
first case leaves time for the next.

Writes OUT/paper_measure.csv and OUT/paper_measure.json (the same rows plus the environment), OUT
= `--out`, else $OUT, else results/gpu_check; rewritten after every case so a timeout keeps what
finished. `--tiny`: the same code path on a tiny DeltaNet, 128 tokens, at most 2 rows, on the CPU
(the project's torch backend), for tests/test_gpu_check.py.

Deviations from a paper run: random weights and random tokens (memory and time do not depend on
the values; REFINE's rollouts and rewards do, a little); one GPU, so no DDP or FSDP communication
(and no sharding: the whole model's AdamW states sit on the one GPU); the same random batch stands
in for each of NTP's grad_accum consecutive batches.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from refine.config import merge_config_files  # noqa: E402
from refine.models import backend  # noqa: E402
from refine.models.fla_models import build_fla_model  # noqa: E402
from refine.rl.config import refine_config  # noqa: E402
from refine.study import validate_config  # noqa: E402
from refine.train.config import train_config  # noqa: E402
from refine.train.memory import GIB, estimate_memory  # noqa: E402
from refine.train.ntp import NTPMethod  # noqa: E402
from refine.train.optim import build_optimizer, optimizer_step  # noqa: E402
from refine.train.refine import RefineMethod  # noqa: E402

log = logging.getLogger("gpu_paper_measure")

PAPER_MODEL = {"hidden_size": 2048, "num_hidden_layers": 24, "num_heads": 16, "vocab_size": 32000}
FUSED = {"fuse_norm": True, "fuse_swiglu": True, "fuse_cross_entropy": True, "fuse_linear_cross_entropy": False}
TINY_MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2, "vocab_size": 101}
TINY_SEQ, TINY_ROWS = 128, 2
COLUMNS = [
    "case", "section", "method", "status", "rows_per_gpu", "mini_batch_per_gpu", "micro_batch_size",
    "grad_accum", "gradient_checkpointing", "rows_per_forward", "seq_len", "world_size", "num_params",
    "peak_gib", "time_first_s", "time_warm_s", "optimizer_steps_per_update", "updates", "loss",
    "est_total_gib", "est_params_grads_optimizer_gib", "est_activations_gib", "est_logits_gib",
    "est_states_gib", "est_scoring_gib", "est_paper_total_gib", "paper_parallel", "device", "error",
]  # fmt: skip


@dataclasses.dataclass
class Case:
    """One measured setting: a method on `rows` rows of `seq_len` tokens."""

    name: str
    section: str
    method: str  # "refine" or "ntp"
    rows: int  # per-GPU rows of one batch
    train: object  # TrainConfig of the section, batch_size = rows (one process)
    refine: object | None  # RefineConfig for one process (per-GPU mini-batch) for method "refine"
    paper_train: object  # the section's own TrainConfig and RefineConfig (global sizes, W processes)
    paper_refine: object | None

    @property
    def micro(self) -> int | None:
        return None if self.refine is None else self.refine.micro_batch_size

    @property
    def mini(self) -> int | None:
        return None if self.refine is None else self.refine.mini_batch_size


def paper_cases(config_files: list[str], tiny: bool) -> tuple[list[Case], int, int]:
    """The cases of the resolved config, its world size W and sequence length."""
    cfg = validate_config(merge_config_files(config_files), ", ".join(config_files))
    world = int(cfg.get("gpus_per_job") or 1)
    seq_len = TINY_SEQ if tiny else int(cfg["data"]["midtrain"]["seq_len"])
    cases = []
    midtrain = cfg.get("midtrain") or {}
    for name, section in (("refine", "refine"), ("ntp", "sft"), ("ntp_matched", "sft_matched")):
        if section not in midtrain:
            continue
        tcfg = train_config(cfg, f"midtrain.{section}.train")
        rows = max(1, tcfg.batch_size // world)
        rcfg = local = None
        if name == "refine":
            rcfg = refine_config(cfg, "midtrain.refine.refine")
            mini = None if rcfg.mini_batch_size is None else max(1, rcfg.mini_batch_size // world)
            if tiny:
                rows, mini = min(rows, TINY_ROWS), None if mini is None else 1
            local = dataclasses.replace(rcfg, mini_batch_size=mini)  # one process: its mini-batch is global
        elif tiny:
            rows = min(rows, TINY_ROWS)
        local_train = dataclasses.replace(tcfg, batch_size=rows, grad_accum=min(tcfg.grad_accum, 2) if tiny
                                          else tcfg.grad_accum)  # fmt: skip
        cases.append(Case(name, f"midtrain.{section}", "refine" if rcfg else "ntp", rows, local_train, local,
                          tcfg, rcfg))  # fmt: skip
    return cases, world, seq_len


def fallback(case: Case) -> Case | None:
    """The same case at one row at once (see the module docstring), None if it already is."""
    if case.method == "refine":
        if case.micro == 1 or case.rows == 1:
            return None
        refine = dataclasses.replace(case.refine, micro_batch_size=1)
        return dataclasses.replace(case, name=f"{case.name}_micro1", refine=refine)
    if case.rows == 1:
        return None
    train = dataclasses.replace(case.train, batch_size=1, grad_accum=case.train.grad_accum * case.rows)
    return dataclasses.replace(case, name=f"{case.name}_1row", rows=1, train=train)


def build_model(tiny: bool, device: torch.device):
    """The 1.3B DeltaNet (or the tiny one) with random fp32 weights, initialised on `device`."""
    backend.activate(device.type)
    sizes = dict(TINY_MODEL if tiny else PAPER_MODEL)
    vocab = sizes.pop("vocab_size")
    settings = {} if device.type == "cpu" else FUSED  # CPU: build_fla_model's unfused torch blocks
    torch.manual_seed(0)
    with torch.device(device):
        model = build_fla_model("delta_net", vocab, **sizes, **settings)
    return model.float().train()


def one_update(model, method, batch, optimizer, cfg, device, batches: int) -> tuple[float, int]:
    """`batches` batches as `refine.train.loop` runs them (losses under autocast, each backpropagated
    scaled by 1/grad_accum, one optimizer step per grad_accum losses with metrics; a loss without
    metrics is a gradient micro-batch); returns (mean loss of the steps, optimizer steps)."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    steps, pending, losses, carried = 0, 0, [], 0.0
    for _ in range(batches):
        updates = method.updates(model, batch)
        try:
            while (item := _next(updates, autocast)) is not None:
                loss, metrics = item
                (loss / cfg.grad_accum).backward()
                carried += loss.item()
                if metrics is None:
                    continue
                losses.append(carried)
                carried, pending = 0.0, pending + 1
                if pending == cfg.grad_accum:
                    optimizer_step(optimizer, cfg.grad_clip)  # clip, step, zero (refine.train.optim)
                    steps, pending = steps + 1, 0
        finally:
            updates.close()
    return sum(losses) / max(1, len(losses)), steps


def _next(updates, autocast):
    with autocast:
        return next(updates, None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _estimates(model, case: Case, seq_len: int, world: int, device: torch.device) -> dict:
    """`estimate_memory` of the case on one process, and of the section's paper setting."""
    chunk = case.refine.logits_chunk if case.refine is not None else NTPMethod.logits_chunk
    autocast = device.type == "cuda"
    one = estimate_memory(model, case.train, seq_len, 1, "ddp", logits_chunk=chunk, autocast=autocast,
                          refine=case.refine)  # fmt: skip
    paper = estimate_memory(model, case.paper_train, seq_len, world, case.paper_train.parallel,
                            logits_chunk=chunk, autocast=autocast, refine=case.paper_refine)  # fmt: skip
    return {
        "rows_per_forward": one["rows"],
        "est_total_gib": one["total"] / GIB,
        "est_params_grads_optimizer_gib": (one["params"] + one["grads"] + one["optimizer"]) / GIB,
        "est_activations_gib": one["activations"] / GIB,
        "est_logits_gib": one["logits"] / GIB,
        "est_states_gib": one["states"] / GIB,
        "est_scoring_gib": one["scoring"] / GIB,
        "est_paper_total_gib": paper["total"] / GIB,
        "paper_parallel": case.paper_train.parallel,
    }


def measure(model, case: Case, seq_len: int, world: int, device: torch.device, updates: int,
            deadline: float = math.inf) -> dict:
    """Run up to `updates` updates of `case` (no further one once the last update's time would pass
    `deadline`, a `time.perf_counter()` value); the row of the results table."""
    row = _describe(case, seq_len) | {"world_size": world, "device": str(device), "updates": 0,
                                      "num_params": sum(p.numel() for p in model.parameters())}  # fmt: skip
    row.update(_estimates(model, case, seq_len, world, device))
    vocab = model.config.vocab_size
    x = torch.randint(3, vocab, (case.rows, seq_len), generator=torch.Generator().manual_seed(1)).to(device)
    batch = {"input_ids": x, "labels": x.clone(), "attention_mask": torch.ones_like(x)}
    method = RefineMethod(case.refine) if case.method == "refine" else NTPMethod()
    batches = case.train.grad_accum if case.method == "ntp" else 1  # NTP: one loss per batch
    optimizer = build_optimizer(model, case.train)
    if case.train.gradient_checkpointing:  # as the loop does
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, error = [], None
    try:
        for _ in range(updates):
            if times and time.perf_counter() + times[-1] > deadline:
                log.info("%s: no further update within the time budget", case.name)
                break
            _sync(device)
            started = time.perf_counter()
            row["loss"], row["optimizer_steps_per_update"] = one_update(
                model, method, batch, optimizer, case.train, device, batches
            )
            _sync(device)
            times.append(time.perf_counter() - started)
            row["updates"] = len(times)
            log.info("%s: update %d took %.2f s", case.name, len(times), times[-1])
        row["status"] = "ok"
    except torch.OutOfMemoryError as oom:
        error = "oom"
        row["status"], row["error"] = "oom", str(oom).splitlines()[0][:300]
    except Exception as exc:  # recorded, and the next case still runs
        error = "error"
        row["status"], row["error"] = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        log.exception("%s failed", case.name)
    if device.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / GIB
    row["time_first_s"] = times[0] if times else None
    row["time_warm_s"] = sum(times[1:]) / len(times[1:]) if len(times) > 1 else None
    del optimizer, method, batch
    if case.train.gradient_checkpointing:
        model.activation_checkpointing_disable()
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if error:
        log.warning("%s: %s (%s)", case.name, row["status"], row.get("error"))
    return row


def _describe(case: Case, seq_len: int) -> dict:
    return {"case": case.name, "section": case.section, "method": case.method, "rows_per_gpu": case.rows,
            "mini_batch_per_gpu": case.mini, "micro_batch_size": case.micro, "grad_accum": case.train.grad_accum,
            "gradient_checkpointing": case.train.gradient_checkpointing, "seq_len": seq_len}  # fmt: skip


def environment(device: torch.device) -> dict:
    import fla
    import transformers
    import triton

    env = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
           "transformers": transformers.__version__, "fla": fla.__version__, "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu_total_gib"] = torch.cuda.get_device_properties(device).total_memory / GIB
    return env


def write(out: Path, rows: list[dict], env: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "paper_measure.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k) for k in COLUMNS})
    (out / "paper_measure.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "results" / "gpu_check"))
    parser.add_argument("--config", nargs="+", default=[str(REPO / "config/config.yaml"),
                                                         str(REPO / "config/paper.yaml")])  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="tiny DeltaNet, 128 tokens, CPU (a test of this script)")
    parser.add_argument("--updates", type=int, default=2, help="optimizer steps per case (first = cold)")
    parser.add_argument("--time-budget", type=float, default=math.inf, help="seconds; no new case after that")
    parser.add_argument("--case-budget", type=float, default=math.inf,
                        help="seconds per case; no further update of a case whose next one would end past it")
    parser.add_argument("--cases", nargs="*", default=None, help="case names to run (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    started = time.perf_counter()
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.tiny:
        parser.error("no CUDA device: the paper-size measurement needs a GPU (use --tiny on a CPU)")
    cases, world, seq_len = paper_cases(args.config, args.tiny)
    if args.cases is not None:
        cases = [c for c in cases if c.name in args.cases]
    env = environment(device)
    log.info("cases %s at W=%d, %d tokens; %s", [_describe(c, seq_len) for c in cases], world, seq_len, env)
    model = build_model(args.tiny, device)
    rows: list[dict] = []
    out = Path(args.out)
    queue = list(cases)
    while queue:
        case = queue.pop(0)
        if time.perf_counter() - started > args.time_budget:
            rows.append(_describe(case, seq_len) | {"status": "skipped_time"})
        else:
            deadline = min(started + args.time_budget, time.perf_counter() + args.case_budget)
            rows.append(measure(model, case, seq_len, world, device, args.updates, deadline))
            if rows[-1]["status"] == "oom" and (retry := fallback(case)) is not None:
                queue.insert(0, retry)
        write(out, rows, env)
        log.info("%s", {k: rows[-1].get(k) for k in ("case", "status", "peak_gib", "time_warm_s", "est_total_gib")})
    log.info("wrote %s (%.0f s)", out / "paper_measure.csv", time.perf_counter() - started)
    return 0 if all(r["status"] in ("ok", "oom", "skipped_time") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
