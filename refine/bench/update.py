"""What one update costs: NTP-SFT vs REFINE one-pass vs REFINE re-encode, side by side (REFINE.md §6).

`run_bench` builds each tiny architecture once and times, per update, the wall clock of

- `ntp`: an NTP-SFT update (`NTPMethod`: forward, backward, AdamW step);
- `refine_onepass`: the REFINE update as the project runs it (`RefineMethod(mode="onepass")`);
- `refine_reencode`: the authors' structure (`RefineMethod(mode="reencode")`: every prefix
  re-encoded for its state and again with grad for the policy loss);

each followed by gradient clipping and an AdamW step (lr 1e-6, the authors'). The variants run
round-robin (ntp, onepass, reencode, ntp, ...) so that machine noise spreads over all of them;
the first round is warm-up and not counted. Reported per architecture and variant: median / min /
max seconds per update, tokens/s (B*S / median), the peak resident memory during an update above
the resident memory before it (psutil RSS sampled every 5 ms by a thread: `resource` maxrss is a
lifetime peak and tracemalloc does not see torch's allocator), and the CPU time that *other*
processes used during the timed updates, in cores (system busy time minus this process's, from
psutil), since the machine is shared. Ratios: median / NTP median (target <= 1.5 for one-pass),
and reencode / onepass (target >= 5). Set OMP_WAIT_POLICY=PASSIVE before torch starts
(FEASIBILITY.md: busy-waiting threads slow erratically on a shared machine); `main` sets it.

Deviations: the vocabulary is random tokens over `vocab_size` (default 1024, the size of the
study's word vocabulary), not real text; costs do not depend on token values.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import statistics
import threading
import time
from pathlib import Path

import psutil
import torch

from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.train.ntp import NTPMethod
from refine.train.optim import apply_updates
from refine.train.refine import RefineMethod

log = logging.getLogger(__name__)

VARIANTS = ("ntp", "refine_onepass", "refine_reencode")
COLUMNS = (
    "arch",
    "variant",
    "seq_len",
    "batch_size",
    "num_positions",
    "rollout_len",
    "timed_updates",
    "threads",
    "median_s",
    "min_s",
    "max_s",
    "tokens_per_s",
    "peak_rss_delta_mib",
    "other_cpu_cores",
    "ratio_vs_ntp",
    "reencode_over_onepass",
)


class _PeakRSS:
    """Peak RSS (bytes) of this process while the context is open, sampled every `interval` s."""

    def __init__(self, interval: float = 0.005):
        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _cpu_busy_s() -> float:
    """System-wide busy CPU seconds so far (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _own_cpu_s(process: psutil.Process) -> float:
    t = process.cpu_times()
    return t.user + t.system


def _one_update(model, method, batch, optimizer) -> None:
    """The loop's work for one batch: backward per yielded loss, clip + step + zero per optimizer step
    (`refine.train.optim.apply_updates`, as test-time training takes them)."""
    apply_updates(model, method, batch, optimizer, max_norm=1.0)


def bench_arch(
    arch: str,
    seq_len: int,
    batch_size: int,
    refine_cfg: RefineConfig,
    repeats: int,
    vocab_size: int,
    overrides: dict | None = None,
    seed: int = 0,
) -> list[dict]:
    """Time the three variants of `VARIANTS` round-robin on one architecture; one row per variant."""
    torch.manual_seed(seed)
    model = build_model(arch, vocab_size, overrides).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), weight_decay=0.01)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len))
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    methods = {
        "ntp": NTPMethod(),
        "refine_onepass": RefineMethod(refine_cfg, "onepass"),
        "refine_reencode": RefineMethod(refine_cfg, "reencode"),
    }
    process = psutil.Process()
    times = {v: [] for v in VARIANTS}
    peaks = {v: 0 for v in VARIANTS}
    other = {v: 0.0 for v in VARIANTS}
    for round_ in range(repeats + 1):  # round 0 is warm-up
        for variant in VARIANTS:
            busy0, own0 = _cpu_busy_s(), _own_cpu_s(process)
            with _PeakRSS() as rss:
                start = time.perf_counter()
                _one_update(model, methods[variant], batch, optimizer)
                elapsed = time.perf_counter() - start
            other_s = max(0.0, (_cpu_busy_s() - busy0) - (_own_cpu_s(process) - own0))
            if round_ == 0:
                continue
            times[variant].append(elapsed)
            peaks[variant] = max(peaks[variant], rss.peak - rss.before)
            other[variant] += other_s
        last = {v: round(t[-1], 3) for v, t in times.items() if t}
        log.info("%s round %d/%d: %s", arch, round_, repeats, last)
    medians = {v: statistics.median(times[v]) for v in VARIANTS}
    rows = []
    for variant in VARIANTS:
        rows.append(
            {
                "arch": arch,
                "variant": variant,
                "seq_len": seq_len,
                "batch_size": batch_size,
                "num_positions": refine_cfg.num_positions,
                "rollout_len": refine_cfg.rollout_len,
                "timed_updates": repeats,
                "threads": torch.get_num_threads(),
                "median_s": medians[variant],
                "min_s": min(times[variant]),
                "max_s": max(times[variant]),
                "tokens_per_s": batch_size * seq_len / medians[variant],
                "peak_rss_delta_mib": peaks[variant] / 2**20,
                "other_cpu_cores": other[variant] / sum(times[variant]),
                "ratio_vs_ntp": medians[variant] / medians["ntp"],
                "reencode_over_onepass": medians["refine_reencode"] / medians["refine_onepass"],
            }
        )
    return rows


def run_bench(
    archs=("delta_net", "lact"),
    seq_len: int = 2048,
    batch_size: int = 4,
    num_positions: int = 8,
    rollout_len: int = 5,
    repeats: int = 5,
    out_csv: str | Path = "results/bench/update_cost.csv",
    *,
    margin: int = 20,
    vocab_size: int = 1024,
    overrides: dict[str, dict] | None = None,
    seed: int = 0,
) -> list[dict]:
    """Benchmark every arch of `archs`; write `out_csv` (columns `COLUMNS`) and return its rows.

    `overrides[arch]`: config overrides of the tiny model (tests use smaller ones)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    cfg = RefineConfig(num_positions=num_positions, rollout_len=rollout_len, margin=margin)
    cfg.validate_for_length(seq_len)
    rows = []
    for arch in archs:
        arch_overrides = (overrides or {}).get(arch)
        rows += bench_arch(arch, seq_len, batch_size, cfg, repeats, vocab_size, arch_overrides, seed)
    bad = [r for r in rows if not all(math.isfinite(r[c]) for c in COLUMNS[8:])]
    if bad:
        raise RuntimeError(f"non-finite benchmark values: {bad}")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def add_arguments(parser) -> None:
    """The `refine bench` options (the CLI calls `main(args)` with them parsed)."""
    parser.add_argument("--archs", nargs="+", default=["delta_net", "lact"])
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-positions", type=int, default=8)
    parser.add_argument("--rollout-len", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per variant (plus 1 warm-up)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", default="results/bench/update_cost.csv")


def main(args) -> list[dict]:
    """Run `run_bench` from parsed `add_arguments` options and print a summary table."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # effective only if torch's pool has not started
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_bench(
        args.archs, args.seq_len, args.batch_size, args.num_positions, args.rollout_len, args.repeats,
        args.out,
    )
    print(
        f"{'arch':10s} {'variant':16s} {'median_s':>9s} {'tok/s':>8s} {'x NTP':>6s} {'peak MiB':>9s} "
        f"{'other cores':>11s}"
    )
    for r in rows:
        print(
            f"{r['arch']:10s} {r['variant']:16s} {r['median_s']:9.3f} {r['tokens_per_s']:8.0f} "
            f"{r['ratio_vs_ntp']:6.2f} {r['peak_rss_delta_mib']:9.1f} {r['other_cpu_cores']:11.2f}"
        )
    for arch in dict.fromkeys(r["arch"] for r in rows):
        r = next(r for r in rows if r["arch"] == arch)
        print(f"{arch}: reencode / onepass = {r['reencode_over_onepass']:.2f}")
    return rows


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m refine.bench", description=__doc__)
    add_arguments(parser)
    main(parser.parse_args())
