"""REFINE's one-pass update == the re-encoding reference, on CUDA (the GPU twin of
tests/train/test_refine.py::test_onepass_equals_reencode_reference).

On CUDA the fla models run on fla's own Triton kernels, which have no state recorder, so the
one-pass update takes `encode_segments` (the batch split at the rollout starts, the cache carried
from segment to segment); the reference re-encodes every prefix from scratch. Same seed, so the
same positions and rollouts; the loss, the update's metrics and every gradient must agree.
LaCT (project code, pure torch) takes its recorder path on CUDA as on a CPU.

Tolerances, looser than the CPU test's (1e-5): the two modes run the Triton kernels on different
segment lengths (chunked kernel above 64 tokens, fused recurrent kernel at or below), and those
kernels may compute in TF32 (unit roundoff ~4.9e-4). Loss and metrics to 2e-3 (relative, or
absolute for values near 0); gradients to 1e-2 relative plus 1e-3 of the largest gradient entry.
A rollout token drawn differently (two nearly tied probabilities rounded apart) would break the
comparison at order 1; with 24 rollout tokens per case that is rare, and the seed is fixed.
"""

import pytest
import torch

from refine.models.registry import build_model
from refine.rl.config import RefineConfig
from refine.train.refine import RefineMethod

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = "cuda"
VOCAB = 53


def _setup(arch: str, seq_len: int = 160, bsz: int = 4):
    torch.manual_seed(0)
    overrides = {"hidden_size": 64, "num_hidden_layers": 2}
    if arch == "lact":
        overrides.update(window_size=16, lact_chunk_size=16)
    else:
        overrides.update(num_heads=2)
    model = build_model(arch, VOCAB, overrides, device=DEVICE)
    x = torch.randint(0, VOCAB, (bsz, seq_len), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    return model, {"input_ids": x, "labels": x.clone(), "attention_mask": torch.ones_like(x)}


def _run(model, batch, cfg, mode, seed=1):
    torch.manual_seed(seed)
    method = RefineMethod(cfg, mode)
    model.zero_grad()
    results = []
    for loss, metrics in method.updates(model, batch):
        loss.backward()
        results.append((loss.detach(), metrics))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return results, grads


@pytest.mark.parametrize("arch", ["delta_net", "gated_deltanet", "lact"])
@pytest.mark.parametrize("num_rollouts", [1, 2])
def test_onepass_equals_reencode_on_cuda(arch, num_rollouts):
    torch.backends.cuda.matmul.allow_tf32 = False
    model, batch = _setup(arch)
    cfg = RefineConfig(num_positions=3, rollout_len=4, num_rollouts=num_rollouts, margin=8, reward="hybrid")
    fast, g_fast = _run(model, batch, cfg, "onepass")
    slow, g_slow = _run(model, batch, cfg, "reencode")
    assert len(fast) == len(slow) == 1
    (l_fast, m_fast), (l_slow, m_slow) = fast[0], slow[0]
    assert torch.isfinite(l_fast)
    torch.testing.assert_close(l_fast, l_slow, rtol=2e-3, atol=2e-3)
    for key in ("reward", "reward_std", "rollout_exact", "rollout_cosine", "entropy_selected", "ntp_loss"):
        assert m_fast[key] == pytest.approx(m_slow[key], rel=2e-3, abs=2e-3), key
    assert g_fast.keys() == g_slow.keys() and g_slow
    global_scale = max(float(g.abs().max()) for g in g_slow.values())
    for name in g_slow:
        torch.testing.assert_close(g_fast[name], g_slow[name], rtol=1e-2, atol=1e-3 * global_scale, msg=name)
