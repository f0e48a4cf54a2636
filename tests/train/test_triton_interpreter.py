"""fla's Triton kernels through the project's model code, on a CPU: Triton's interpreter
(TRITON_INTERPRET=1) runs a REFINE update of a tiny DeltaNet on fla's own kernels — the path a GPU
takes: no state recorder, so `encode_segments` — and it equals the same update on the torch
backend (tests/train/triton_interpret_worker.py says what the interpreter cannot run). Slow: the
interpreter executes every kernel instance in numpy (~25 s for one update)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("triton_interpret_worker.py")


@pytest.mark.slow
def test_interpreted_triton_kernels_give_the_torch_backend_update(tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).parents[2])}  # fmt: skip
    done = subprocess.run([sys.executable, str(WORKER), str(out)], env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    for variant in ("no_conv", "conv"):
        triton, torch_backend = results[f"{variant}/triton"], results[f"{variant}/torch"]
        assert not triton["can_record"] and torch_backend["can_record"]  # segments path vs record path
        assert triton["loss"] == pytest.approx(torch_backend["loss"], rel=1e-5)
        for key in ("reward", "reward_std", "rollout_exact", "rollout_cosine", "entropy_selected", "ntp_loss"):
            assert triton["metrics"][key] == pytest.approx(torch_backend["metrics"][key], rel=1e-4, abs=1e-6), key
    grads = {k: torch.tensor(v) for k, v in results["no_conv/triton"]["grads"].items()}
    reference = {k: torch.tensor(v) for k, v in results["no_conv/torch"]["grads"].items()}
    assert grads.keys() == reference.keys() and grads
    scale = max(float(g.abs().max()) for g in reference.values())
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
