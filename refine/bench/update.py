"""What one update costs: NTP-SFT vs REFINE one-pass (1 and the paper's 4 mini-batches) vs re-encode (REFINE.md §6).

`bench_update` builds one tiny architecture and times, per update of the same batch (B random
sequences of length S), the wall clock of

- `ntp`: an NTP-SFT update (`NTPMethod`: forward, backward, one optimizer step);
- `ntp_mb<m>`: the same batch in m mini-batches, one optimizer step each (compute-matched steps);
- `refine_onepass`: the REFINE update as the project runs it (`RefineMethod(mode="onepass")`),
  the batch as one mini-batch (the best case for the one-pass structure);
- `refine_onepass_mb<m>`: the paper's structure, m mini-batches per batch (the authors: 128
  sequences in mini-batches of 32, 4 optimizer steps), positions selected once per batch;
- `refine_onepass_mb<m>_own`: the same with `select_per_mini_batch` (each mini-batch selects from
  its own grad forward: no no-grad scoring pass);
- `refine_reencode`: the authors' structure (`RefineMethod(mode="reencode")`: every prefix
  re-encoded for its state and again with grad for the policy loss), only for `reencode_archs`;

each through `refine.train.optim.apply_updates` (backward, clip 1.0, AdamW step at lr 1e-6, the
authors'), the loop's own step. The variants run round-robin (ntp, onepass, ..., ntp, ...) so that
machine noise spreads over all of them; the first round is warm-up. Ratios: median / NTP median
(targets: <= 1.5 for one pass, <= 1.1 with 4 mini-batches), `refine_reencode` / `refine_onepass`.
"""

from __future__ import annotations

import logging

import torch

from refine.bench.measure import Samples
from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.train.ntp import NTPMethod
from refine.train.optim import apply_updates
from refine.train.refine import RefineMethod

log = logging.getLogger(__name__)


def update_variants(refine_cfg: RefineConfig, batch_size: int, mini_batches: int, reencode: bool) -> dict:
    """{variant name: (method, mini-batches)} of one architecture, in round-robin order."""
    mb = batch_size // mini_batches
    variants = {"ntp": (NTPMethod(), 1)}
    if mini_batches > 1:
        variants[f"ntp_mb{mini_batches}"] = (_MiniBatched(NTPMethod(), mb), mini_batches)
    variants["refine_onepass"] = (RefineMethod(refine_cfg, "onepass"), 1)
    if mini_batches > 1:
        cfg = RefineConfig(**{**refine_cfg.__dict__, "mini_batch_size": mb})
        variants[f"refine_onepass_mb{mini_batches}"] = (RefineMethod(cfg, "onepass"), mini_batches)
        own = RefineConfig(**{**cfg.__dict__, "select_per_mini_batch": True})
        variants[f"refine_onepass_mb{mini_batches}_own"] = (RefineMethod(own, "onepass"), mini_batches)
    if reencode:
        variants["refine_reencode"] = (RefineMethod(refine_cfg, "reencode"), 1)
    return variants


class _MiniBatched:
    """A method's updates on consecutive row slices of `rows` rows: one optimizer step each."""

    def __init__(self, method, rows: int):
        self.method, self.rows = method, rows

    def updates(self, model, batch):
        size = batch["input_ids"].shape[0]
        for lo in range(0, size, self.rows):
            yield from self.method.updates(model, {k: v[lo : lo + self.rows] for k, v in batch.items()})


def time_variants(model, variants: dict, batch: dict, repeats: int, label: str) -> dict[str, Samples]:
    """Round-robin over `variants` ({name: (method, _)}), `repeats` timed rounds after one warm-up."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), weight_decay=0.01)
    samples = {name: Samples() for name in variants}
    for round_ in range(repeats + 1):  # round 0 is warm-up
        for name, (method, _) in variants.items():
            samples[name].time(apply_updates, model, method, batch, optimizer, count=round_ > 0)
        last = {name: round(s.times[-1], 3) for name, s in samples.items() if s.times}
        log.info("%s round %d/%d: %s", label, round_, repeats, last)
    return samples


def random_batch(batch_size: int, seq_len: int, vocab_size: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab_size, (batch_size, seq_len))
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def bench_update(bench, arch: str) -> list[dict]:
    """The `update` rows of one architecture (`bench`: a `refine.bench.BenchConfig`)."""
    torch.manual_seed(bench.seed)
    model = build_model(arch, bench.vocab_size, bench.overrides.get(arch)).train()
    cfg = RefineConfig(**bench.refine_fields())
    cfg.validate_for_length(bench.seq_len)
    batch = random_batch(bench.batch_size, bench.seq_len, bench.vocab_size)
    variants = update_variants(cfg, bench.batch_size, bench.mini_batches, arch in bench.reencode_archs)
    samples = time_variants(model, variants, batch, bench.repeats, f"update {arch}")
    ntp = samples["ntp"].summary()["median_s"]
    rows = []
    for name, (_, mini_batches) in variants.items():
        summary = samples[name].summary()
        rows.append(
            {
                "measurement": "update",
                "arch": arch,
                "variant": name,
                "seq_len": bench.seq_len,
                "batch_size": bench.batch_size,
                "num_positions": 0 if name.startswith("ntp") else cfg.num_positions,
                "rollout_len": 0 if name.startswith("ntp") else cfg.rollout_len,
                "num_rollouts": 0 if name.startswith("ntp") else cfg.num_rollouts,
                "mini_batches": mini_batches,
                **summary,
                "tokens_per_s": bench.batch_size * bench.seq_len / summary["median_s"],
                "ratio": summary["median_s"] / ntp,
                "ratio_to": "ntp",
            }
        )
    return rows
