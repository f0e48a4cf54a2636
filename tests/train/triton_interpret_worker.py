"""The process body of tests/train/test_triton_interpreter.py, run with TRITON_INTERPRET=1 (which
must be set before triton is imported): one REFINE update of a tiny DeltaNet through fla's own
Triton kernels, executed by Triton's CPU interpreter, then the same update (same weights, same
seed) on the project's torch backend. Writes OUT (JSON): per backend and model variant, the loss,
the update's metrics and the gradients.

Triton's interpreter has no benchmarker (its autotuner's `do_bench` needs a GPU driver: "0 active
drivers"), so autotuning is replaced by the first config. Sequences stay <= 64 tokens, where fla's
DeltaNet layer takes its fused recurrent kernel: the chunked kernel does not run in the interpreter
(`chunk_delta_h.py`: `i_t.to(tl.int64)` on a Python int). With short convolutions the backward
fails in fla's causal_conv1d `compute_dh0_kernel` ("mask has unsupported dtype"), so the variant
with short convolutions is compared forward only.
"""

import json
import sys

import torch
import triton.runtime.autotuner as autotuner

autotuner.Autotuner._bench = lambda self, *args, config, **meta: [0.0, 0.0, 0.0]

from refine.models import backend  # noqa: E402
from refine.models.fla_models import build_fla_model  # noqa: E402
from refine.models.state import can_record  # noqa: E402
from refine.rl.config import RefineConfig  # noqa: E402
from refine.train.refine import RefineMethod  # noqa: E402


def update(model, batch, backward: bool) -> dict:
    torch.manual_seed(1)
    model.zero_grad()
    cfg = RefineConfig(num_positions=2, rollout_len=3, margin=4, reward="hybrid")
    with torch.set_grad_enabled(backward):
        loss, metrics = next(RefineMethod(cfg).updates(model, batch))
    if backward:
        loss.backward()
    grads = {n: p.grad.tolist() for n, p in model.named_parameters() if p.grad is not None}
    return {"loss": loss.item(), "metrics": metrics, "grads": grads, "can_record": can_record(model)}


def main(out: str) -> None:
    torch.set_num_threads(1)
    x = torch.randint(0, 41, (2, 40), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": x, "labels": x.clone(), "attention_mask": torch.ones_like(x)}
    results = {}
    for variant, short_conv in (("no_conv", False), ("conv", True)):
        torch.manual_seed(0)
        model = build_fla_model("delta_net", vocab_size=41, hidden_size=32, num_hidden_layers=2, num_heads=2,
                                use_short_conv=short_conv)  # fmt: skip
        for name, device in (("triton", "cuda"), ("torch", "cpu")):  # "cuda" selects fla's own kernels
            backend.activate(device)
            results[f"{variant}/{name}"] = update(model, batch, backward=not short_conv)
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
