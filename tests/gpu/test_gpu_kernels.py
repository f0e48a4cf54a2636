"""fla's Triton kernels through the project's models == the project's torch backend, on CUDA.

The same weights (one model on the GPU) run twice: with `backend.activate("cuda")` (fla's own
Triton kernels: chunked delta rule / gated delta rule, causal conv1d, fused RMSNorm, SwiGLU and
cross-entropy) and with `backend.activate("cpu")` (the pure-torch ops of `refine.models.ops`, which
run on CUDA tensors too). Compared, for DeltaNet and Gated DeltaNet at T = 191 (> 64, so fla's
layers take their chunked kernels; not a multiple of the chunk size 64): the logits and the loss,
the recurrent and short-convolution states of fla's cache after the forward, the states that
`refine.models.state.encode` hands out at positions (the segment path on Triton, the recorder path
for DeltaNet on the torch backend), and the gradient of the loss for every parameter.

Tolerances. The torch side runs fp32 with TF32 matmuls off; fla's Triton kernels may use TF32 in
`tl.dot` (10-bit mantissa, unit roundoff 2^-11 ~ 4.9e-4), so elementwise equality to 1e-5 is not
expected. Each tensor is compared by its relative Frobenius error ||a - b|| / ||b||: at most
REL_FORWARD = 5e-3 for logits, loss and states (a few TF32 roundings through two layers), at most
REL_GRAD = 2e-2 for gradients (a backward pass chains about twice as many products). A wrong
kernel, a missing patch or a wrong state layout gives errors of order 1.
"""

import pytest
import torch

from refine.models import backend
from refine.models.fla_models import build_fla_model
from refine.models.state import cache_to_states, encode, map_states

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = "cuda"
# (name, device handed to backend.activate): "cuda" selects fla's Triton kernels, "cpu" the torch ops
BACKENDS = (("triton", "cuda"), ("torch", "cpu"))
VOCAB, BATCH, SEQ = 61, 2, 191
REL_FORWARD, REL_GRAD = 5e-3, 2e-2
FUSED = {"fuse_norm": True, "fuse_swiglu": True, "fuse_cross_entropy": True}
KINDS = {
    "delta_net": {"hidden_size": 128, "num_hidden_layers": 2, "num_heads": 2},
    "gated_deltanet": {"hidden_size": 128, "num_hidden_layers": 2, "num_heads": 2, "head_dim": 64},
}


def _flat(states) -> dict[str, torch.Tensor]:
    """{"layer/key": tensor} of a States list (tuples of conv states numbered)."""
    out = {}
    for i, layer in enumerate(states):
        for key, value in layer.items():
            values = value if isinstance(value, (tuple, list)) else (value,)
            for j, tensor in enumerate(values):
                if isinstance(tensor, torch.Tensor):
                    out[f"{i}/{key}/{j}"] = tensor.detach().float().clone()
    return out


def _run(model, ids, at, device_for_backend) -> dict[str, dict[str, torch.Tensor]]:
    backend.activate(device_for_backend)
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids, use_cache=True)
    # copied before the backward: fla's fused cross-entropy (inplace_backward) writes its gradient
    # into the logits' storage
    logits, loss = out.logits.detach().float().clone(), out.loss.detach().float().reshape(1).clone()
    cache = _flat(cache_to_states(out.past_key_values))
    out.loss.backward()
    with torch.no_grad():
        encoded = encode(model, ids, at=at)
    return {
        "forward": {"logits": logits, "loss": loss,
                    "encode/hidden": encoded.hidden.float(), "encode/logits": encoded.logits.float()},
        "cache": cache,
        "encode/states": _flat(map_states(encoded.states, lambda t: t)),
        "grads": {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None},
    }  # fmt: skip


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_triton_kernels_equal_the_torch_backend(kind):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = build_fla_model(kind, VOCAB, initializer_range=0.1, **KINDS[kind], **FUSED).to(DEVICE)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    at = torch.tensor([[1, 64, 130, SEQ], [37, 65, 128, 190]], device=DEVICE)  # [B, c] state positions
    results = {name: _run(model, ids, at, device) for name, device in BACKENDS}
    fast, reference = (results[name] for name, _ in BACKENDS)
    for group, limit in (("forward", REL_FORWARD), ("cache", REL_FORWARD), ("encode/states", REL_FORWARD),
                         ("grads", REL_GRAD)):  # fmt: skip
        assert fast[group].keys() == reference[group].keys() and reference[group], group
        for name, ref in reference[group].items():
            assert fast[group][name].shape == ref.shape, (group, name)
            assert ref.norm() > 0, (group, name)  # a comparison of zeros would prove nothing
            error = _relative_error(fast[group][name], ref)
            assert error <= limit, f"{group} {name}: relative error {error:.2e} > {limit:.0e}"
    # every parameter took part in the loss on both backends
    assert len(reference["grads"]) == len(list(model.parameters()))
