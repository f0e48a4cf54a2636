"""Peak memory of REFINE's scoring pass and of the NTP loss, chunked vs full logits, against S and the chunk.

Each cell (what, S, chunk) runs in its own process on a tiny DeltaNet with a large vocabulary, so
that the logits dominate: the peak is the growth of the process's resident set (`ru_maxrss`) over
its size right before the measured call (CPU), or `torch.cuda.max_memory_allocated` over the
allocation before it (CUDA). `chunk` "full" is the unchunked path (the whole [rows, S, V] logits
at once, as before issue 14); a number is `refine.train.chunked` with that many positions per
LM-head call.

    what=score   `score_pass` (no grad): final hidden states + fp32 entropies, `rows` per micro-batch
    what=ntp     `NTPMethod(logits_chunk)`: forward + backward of the NTP loss
    what=refine  one `RefineMethod` update (c=4, k=5, one mini-batch of `rows`): scoring, grad forward,
                 rollouts, losses and backward; "full" is `logits_chunk=None` (one chunk of S)

Usage (a benchmark, not a test; a few minutes on 2 CPU cores at the defaults):

    python tools/bench_scoring_memory.py --lengths 512 1024 2048 4096 --chunks full 64 256 --vocab 8192

Prints one table per `what` (MiB; rows = S, columns = chunk). The chunked columns should stay
nearly flat in S (only the [rows, S, D] hidden states grow) and grow with the chunk; the "full"
column grows linearly in S.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys

log = logging.getLogger("bench_scoring_memory")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_cell(what: str, seq_len: int, chunk: str, vocab: int, rows: int, device: str) -> dict:
    """Build the model, warm up on a short input, then measure one call at `seq_len`."""
    import torch

    from refine.models.registry import build_model
    from refine.rl.config import RefineConfig
    from refine.rl.positions import token_entropy
    from refine.train.chunked import score_pass
    from refine.train.ntp import NTPMethod
    from refine.train.refine import RefineMethod

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = build_model("delta_net", vocab, {"hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2}, device)
    size = None if chunk == "full" else int(chunk)

    def call(length: int) -> None:
        x = torch.randint(0, vocab, (rows, length), device=device)
        if what == "score":
            with torch.no_grad():
                if size is None:  # the pre-chunking pass: all logits, one fp32 entropy
                    token_entropy(model(input_ids=x, output_hidden_states=True).logits)
                else:
                    score_pass(model, x, micro_batch=rows, chunk=size)
        elif what == "ntp":
            batch = {"input_ids": x, "labels": x.clone(), "attention_mask": torch.ones_like(x)}
            (loss, _), = list(NTPMethod(logits_chunk=size).updates(model, batch))
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            batch = {"input_ids": x, "labels": x.clone(), "attention_mask": torch.ones_like(x)}
            cfg = RefineConfig(num_positions=4, rollout_len=5, margin=8, score_micro_batch=rows, logits_chunk=size)
            for loss, _ in RefineMethod(cfg).updates(model, batch):
                loss.backward()
            model.zero_grad(set_to_none=True)

    call(64)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call(seq_len)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = _rss_bytes()
        call(seq_len)
        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
    return {"what": what, "seq_len": seq_len, "chunk": chunk, "peak_mib": peak / 2**20,
            "logits_full_fp32_mib": rows * seq_len * vocab * 4 / 2**20}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--what", nargs="+", default=["score", "ntp", "refine"], choices=["score", "ntp", "refine"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    parser.add_argument("--chunks", nargs="+", default=["full", "64", "256"])
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cell", nargs=3, metavar=("WHAT", "S", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.cell:
        what, seq_len, chunk = args.cell
        print(json.dumps(run_cell(what, int(seq_len), chunk, args.vocab, args.rows, args.device)))
        return
    for what in args.what:
        table = {}
        for seq_len in args.lengths:
            for chunk in args.chunks:
                cmd = [sys.executable, __file__, "--cell", what, str(seq_len), chunk, "--vocab", str(args.vocab),
                       "--rows", str(args.rows), "--device", args.device]  # fmt: skip
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                table[seq_len, chunk] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
        log.info("\n%s: peak MiB over the call (rows=%d, vocab=%d, %s)", what, args.rows, args.vocab, args.device)
        log.info("%8s | %s | full fp32 logits", "S", " | ".join(f"chunk {c:>5}" for c in args.chunks))
        for seq_len in args.lengths:
            cells = " | ".join(f"{table[seq_len, c]:11.1f}" for c in args.chunks)
            log.info("%8d | %s | %9.1f", seq_len, cells, args.rows * seq_len * args.vocab * 4 / 2**20)


if __name__ == "__main__":
    main()
