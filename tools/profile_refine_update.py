"""Where one REFINE one-pass update spends its time, phase by phase, next to an NTP update on the same batch.

Phases (refine/train/refine.py): the recorded grad forward, entropy + position selection, rebuilding the
states at the starts, the k-token rollout, the teacher-forced decode with grad, the loss, the backward.
The batch is `refine bench`'s: random tokens, S=2048, B=4, c=8, k=5. Use on an idle machine; for ratios
side by side use `python -m refine.bench`.

    OMP_WAIT_POLICY=PASSIVE python tools/profile_refine_update.py --arch lact --threads 1
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no busy-waiting on a shared machine

import torch  # noqa: E402

from refine.models.registry import build_model  # noqa: E402
from refine.models.state import encode_recorded  # noqa: E402
from refine.rl.config import RefineConfig  # noqa: E402
from refine.train.chunked import chunked_next_token_loss, output_head  # noqa: E402
from refine.train.ntp import NTPMethod  # noqa: E402
from refine.train.refine import RefineMethod, rollout_from_states  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["delta_net", "lact"], default="lact")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed updates (after one warm-up)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.arch, 1024, None).train()
    ids = torch.randint(0, 1024, (args.batch_size, args.seq_len))
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    cfg = RefineConfig(num_positions=8, rollout_len=5, margin=20)
    method = RefineMethod(cfg)
    totals: dict[str, float] = {}
    clock = [time.perf_counter()]

    def tick(name: str) -> None:
        now = time.perf_counter()
        totals[name] = totals.get(name, 0.0) + now - clock[0]
        clock[0] = now

    for rep in range(args.repeats + 1):
        clock[0] = time.perf_counter()
        for loss, _ in NTPMethod().updates(model, batch):
            tick("ntp: forward")
            loss.backward()
            tick("ntp: backward")
        model.zero_grad()
        clock[0] = time.perf_counter()
        recorded = encode_recorded(model, ids, logits=False)  # as RefineMethod: no [B, S, V] logits
        tick("refine: recorded forward")
        _, _, starts = method.score_and_select(model, ids, batch["attention_mask"].bool(), recorded[0])
        tick("refine: entropy + select")
        hidden, _, states, first = method._grad_forward(model, ids, starts, recorded)
        tick("refine: states at starts")
        rollouts = rollout_from_states(model, states, first, cfg)
        tick("refine: k-token rollout")
        logp = method._teacher_forced(model, states, first, rollouts.tokens)
        tick("refine: teacher-forced decode")
        loss = chunked_next_token_loss(hidden, output_head(model), ids, cfg.logits_chunk)[0] + 0.1 * logp.mean()
        tick("refine: loss")
        loss.backward()
        tick("refine: backward")
        model.zero_grad()
        if rep == 0:  # warm-up
            totals.clear()
    ntp = sum(v for k, v in totals.items() if k.startswith("ntp"))
    refine = sum(v for k, v in totals.items() if k.startswith("refine"))
    for name, total in totals.items():
        print(f"{name:34s} {total / args.repeats:8.3f} s")
    print(f"{'refine / ntp':34s} {refine / ntp:8.2f}")


if __name__ == "__main__":
    main()
