"""bf16 autocast (what paper.yaml's `bf16: true` turns on on CUDA) runs through every model and
the REFINE update: tested under torch's CPU autocast, which casts linear outputs to bf16 the same
way. LaCT used to fail at its first forward (`index_put` of bf16 tokens into the fp32 pending chunk)."""

import pytest
import torch

from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.train.refine import RefineMethod

MODELS = {
    "delta_net": {"hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2},
    "lact": {"hidden_size": 64, "num_hidden_layers": 2, "window_size": 16, "lact_chunk_size": 16},
}


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_forward_and_refine_update_under_bf16_autocast(arch):
    model = build_model(arch, 53, MODELS[arch])
    ids = torch.randint(0, 53, (2, 96))
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits
        loss, metrics = next(RefineMethod(RefineConfig(num_positions=3, rollout_len=4, margin=8)).updates(model, batch))
    assert torch.isfinite(logits.float()).all() and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)  # fp32 masters
