"""Where one REFINE one-pass update spends its time, phase by phase, next to an NTP update on the same batch.

Runs the real `RefineMethod.updates` (1 or `--mini-batches` mini-batches, one optimizer step each)
and NTP through `refine.train.optim.apply_updates`, with the phases of refine/train/refine.py
timed by wrapping the functions the method calls (each wrapper adds only a clock read):

  score pass (no grad)       `score_pass`: the other mini-batches' rows (mini-batch 0's grad forward
                             doubles as its score), entropy of the scored rows included
  grad forward (recorded)    `encode_recorded` with grad, then the states at the starts
  k-token rollout            `rollout_from_states`
  teacher-forced decode      `RefineMethod._teacher_forced` (with grad)
  NTP loss (chunked head)    `chunked_next_token_loss`
  backward + optimizer step  the rest of `apply_updates`: backward, clip, AdamW step
  other                      selection, rewards, advantages, policy loss, bookkeeping

The batch is `refine bench`'s (`refine.bench.BenchConfig`): random tokens, S=2048, B=4, c=8, k=5. Use
on an idle machine; for ratios side by side use `refine bench --measurements update`.

    OMP_WAIT_POLICY=PASSIVE python tools/profile_refine_update.py --arch lact --threads 1 --mini-batches 4
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import defaultdict

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no busy-waiting on a shared machine

import torch  # noqa: E402

import refine.train.refine as refine_module  # noqa: E402
from refine.bench import BenchConfig  # noqa: E402
from refine.bench.update import random_batch  # noqa: E402
from refine.models.registry import build_model  # noqa: E402
from refine.rl.config import RefineConfig  # noqa: E402
from refine.train.ntp import NTPMethod  # noqa: E402
from refine.train.optim import apply_updates  # noqa: E402

log = logging.getLogger("profile_refine_update")

PHASES = {  # (module or class, attribute) -> phase name
    (refine_module, "score_pass"): "score pass (no grad)",
    (refine_module, "encode_recorded"): "grad forward (recorded)",
    (refine_module, "rollout_from_states"): "k-token rollout",
    (refine_module.RefineMethod, "_teacher_forced"): "teacher-forced decode",
    (refine_module, "chunked_next_token_loss"): "NTP loss (chunked head)",
}


def _timed(fn, name, totals):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start

    return wrapper


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Profile and log; returns {phase: seconds per update} with "ntp" and "refine" (the wall times)."""
    sizes = BenchConfig()  # the benchmark's sizes, defined once
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["delta_net", "lact"], default="lact")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed updates (after one warm-up)")
    p.add_argument("--seq-len", type=int, default=sizes.seq_len)
    p.add_argument("--batch-size", type=int, default=sizes.batch_size)
    p.add_argument("--mini-batches", type=int, default=1, help=f"the paper: {sizes.mini_batches}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.arch, sizes.vocab_size, None).train()
    batch = random_batch(args.batch_size, args.seq_len, sizes.vocab_size)
    cfg = RefineConfig(**sizes.refine_fields(), mini_batch_size=args.batch_size // args.mini_batches)
    method, ntp = refine_module.RefineMethod(cfg), NTPMethod()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), weight_decay=0.01)
    totals: dict[str, float] = defaultdict(float)
    originals = {key: getattr(*key) for key in PHASES}
    for (owner, name), phase in PHASES.items():
        setattr(owner, name, _timed(getattr(owner, name), phase, totals))
    wall = defaultdict(float)
    try:
        for rep in range(args.repeats + 1):
            for label, m in (("ntp", ntp), ("refine", method)):
                start = time.perf_counter()
                apply_updates(model, m, batch, optimizer)
                if rep > 0:
                    wall[label] += time.perf_counter() - start
            if rep == 0:
                totals.clear()
    finally:
        for (owner, name), fn in originals.items():
            setattr(owner, name, fn)
    refine = wall["refine"] / args.repeats
    log.info("%s, S=%d, B=%d, %d mini-batch(es), %d thread(s); seconds per update:", args.arch, args.seq_len,
             args.batch_size, args.mini_batches, args.threads)  # fmt: skip
    log.info("%-34s %8.3f", "NTP update (1 step)", wall["ntp"] / args.repeats)
    counted = 0.0
    for phase, total in totals.items():
        log.info("%-34s %8.3f  (%4.1f%%)", "refine: " + phase, total / args.repeats, 100 * total / wall["refine"])
        counted += total / args.repeats
    log.info("%-34s %8.3f", "refine: backward + step + other", refine - counted)
    log.info("%-34s %8.3f", "REFINE update", refine)
    log.info("%-34s %8.2f", "refine / ntp", wall["refine"] / wall["ntp"])
    return {**{k: v / args.repeats for k, v in totals.items()}, "ntp": wall["ntp"] / args.repeats, "refine": refine}


if __name__ == "__main__":
    main()
