"""Run the measurements of a `BenchConfig`, add threads and commit to every row, write the CSV.

Set OMP_WAIT_POLICY=PASSIVE before torch starts (busy-waiting threads slow erratically on a
shared machine); `refine.cli.main` sets it. The measurements run one after another; within each
the variants are interleaved (see each module), so every ratio comes from one run.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
from pathlib import Path

import torch

from refine.bench import COLUMNS, NUMERIC, BenchConfig
from refine.bench.measure import commit

log = logging.getLogger(__name__)


def trl_available() -> bool:
    return importlib.util.find_spec("trl") is not None


def run_bench(bench: BenchConfig, out_csv: str | Path) -> list[dict]:
    """Every measurement of `bench.measurements`; writes `out_csv` (columns `COLUMNS`), returns its rows."""
    from refine.bench.decode import bench_decode
    from refine.bench.scaling import bench_vs_positions, bench_vs_seq_len
    from refine.bench.update import bench_update

    if bench.threads:
        torch.set_num_threads(bench.threads)
    rows: list[dict] = []
    for measurement in bench.measurements:
        if measurement == "update":
            for arch in bench.archs:
                rows += bench_update(bench, arch)
        elif measurement == "trl":
            if not trl_available():
                log.warning("trl is not installed (pip install -e .[bench]): the TRL comparison is skipped")
                continue
            from refine.bench.trl_grpo import bench_trl

            rows += bench_trl(
                bench.seq_len, bench.trl_batch_size, bench.num_positions, bench.rollout_len, bench.trl_repeats,
                bench.vocab_size, bench.overrides.get("delta_net"), bench.margin, bench.seed,
            )  # fmt: skip
        elif measurement == "decode":
            for arch in bench.archs:
                rows += bench_decode(bench, arch)
        elif measurement == "vs_seq_len":
            rows += bench_vs_seq_len(bench)
        elif measurement == "vs_positions":
            rows += bench_vs_positions(bench)
    head = commit()
    for row in rows:
        row.update(threads=torch.get_num_threads(), commit=head)
    bad = [r for r in rows if not all(math.isfinite(r[c]) for c in NUMERIC)]
    if bad:
        raise RuntimeError(f"non-finite benchmark values: {bad}")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: row[c] for c in COLUMNS} for row in rows)
    log.info("wrote %s (%d rows)\n%s", out_csv, len(rows), summary_table(rows))
    return rows


def summary_table(rows: list[dict]) -> str:
    """The rows as aligned text (the log's summary)."""
    lines = [f"{'measurement':12s} {'arch':9s} {'variant':22s} {'S':>5s} {'c':>3s} {'median_s':>9s} {'tok/s':>9s} "
             f"{'ratio':>7s} {'to':12s} {'peak MiB':>8s} {'other':>5s}"]  # fmt: skip
    for r in rows:
        lines.append(
            f"{r['measurement']:12s} {r['arch']:9s} {r['variant']:22s} {r['seq_len']:5d} {r['num_positions']:3d} "
            f"{r['median_s']:9.3f} {r['tokens_per_s']:9.0f} {r['ratio']:7.2f} {r['ratio_to'][:12]:12s} "
            f"{r['peak_rss_delta_mib']:8.1f} {r['other_cpu_cores']:5.2f}"
        )
    return "\n".join(lines)
