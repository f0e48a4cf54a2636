"""Update cost as the work grows: one-pass vs re-encode vs NTP, over S and over c (issue 12).

On the tiny DeltaNet with `scaling_batch_size` sequences: for every S of `scaling_seq_lens` (c =
`num_positions`) and every c of `scaling_positions` (S = `seq_len`), one model and one batch per
point, the three variants timed round-robin (`refine.bench.update.time_variants`). The one-pass
update should stay near linear in S and nearly flat in c; the re-encode structure grows as c*S
(it re-encodes each of the c prefixes twice). Ratios: median / NTP median at the same point.
"""

from __future__ import annotations

import logging

import torch

from refine.bench.update import random_batch, time_variants
from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.train.ntp import NTPMethod
from refine.train.refine import RefineMethod

log = logging.getLogger(__name__)

ARCH = "delta_net"


def _point(bench, measurement: str, seq_len: int, num_positions: int) -> list[dict]:
    torch.manual_seed(bench.seed)
    model = build_model(ARCH, bench.vocab_size, bench.overrides.get(ARCH)).train()
    cfg = RefineConfig(**{**bench.refine_fields(), "num_positions": num_positions})
    cfg.validate_for_length(seq_len)
    batch = random_batch(bench.scaling_batch_size, seq_len, bench.vocab_size)
    variants = {
        "ntp": (NTPMethod(), 1),
        "refine_onepass": (RefineMethod(cfg, "onepass"), 1),
        "refine_reencode": (RefineMethod(cfg, "reencode"), 1),
    }
    label = f"{measurement} S={seq_len} c={num_positions}"
    samples = time_variants(model, variants, batch, bench.scaling_repeats, label)
    ntp = samples["ntp"].summary()["median_s"]
    rows = []
    for name, s in samples.items():
        summary = s.summary()
        rows.append(
            {
                "measurement": measurement,
                "arch": ARCH,
                "variant": name,
                "seq_len": seq_len,
                "batch_size": bench.scaling_batch_size,
                "num_positions": num_positions,
                "rollout_len": 0 if name == "ntp" else bench.rollout_len,
                "num_rollouts": 0 if name == "ntp" else 1,
                "mini_batches": 1,
                **summary,
                "tokens_per_s": bench.scaling_batch_size * seq_len / summary["median_s"],
                "ratio": summary["median_s"] / ntp,
                "ratio_to": "ntp",
            }
        )
    return rows


def bench_vs_seq_len(bench) -> list[dict]:
    return [row for s in bench.scaling_seq_lens for row in _point(bench, "vs_seq_len", s, bench.num_positions)]


def bench_vs_positions(bench) -> list[dict]:
    return [row for c in bench.scaling_positions for row in _point(bench, "vs_positions", bench.seq_len, c)]
