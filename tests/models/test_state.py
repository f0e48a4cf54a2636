"""The model-state interface: one sweep with states at positions == plain forward + re-encoding."""

import pytest
import torch

from refine.models.registry import build_model
from refine.models.state import (
    can_record,
    cat_states,
    decode,
    encode,
    encode_recorded,
    encode_segments,
    map_states,
    reencode_states,
    select_rows,
    zip_states,
)

ARCH_CONFIGS = {
    "delta_net": {"hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2},
    "gated_deltanet": {"hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2, "head_dim": 32},
    "lact": {"hidden_size": 64, "num_hidden_layers": 2, "window_size": 16, "lact_chunk_size": 16},
}
VOCAB = 61


def _model(arch):
    torch.manual_seed(0)
    return build_model(arch, VOCAB, ARCH_CONFIGS[arch]).eval()


def _max_diff(a, b):
    diffs = []
    zip_states([a, b], lambda ts: diffs.append((ts[0].float() - ts[1].float()).abs().max()) or ts[0])
    return max(diffs)


@pytest.fixture(params=list(ARCH_CONFIGS))
def arch(request):
    return request.param


def test_encode_matches_forward_and_reencoding(arch):
    model = _model(arch)
    x = torch.randint(0, VOCAB, (3, 45))
    at = torch.tensor([[5, 17, 30], [9, 17, 44], [1, 20, 45]])
    with torch.no_grad():
        full = model(x, output_hidden_states=True)
        enc = encode(model, x, at)
        ref = reencode_states(model, x, at)
    torch.testing.assert_close(enc.logits, full.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(enc.hidden, full.hidden_states[-1], atol=1e-4, rtol=1e-4)
    assert _max_diff(enc.states, ref) < 1e-4


def test_decode_from_states_continues_the_sequence(arch):
    model = _model(arch)
    x = torch.randint(0, VOCAB, (2, 40))
    at = torch.tensor([[7, 22], [13, 31]])
    with torch.no_grad():
        full = model(x).logits
        enc = encode(model, x, at)
        rows, starts = torch.arange(2).repeat_interleave(2), at.flatten()
        nxt = torch.stack([x[r, s : s + 4] for r, s in zip(rows, starts, strict=True)])  # [4, 4]
        dec = decode(model, enc.states, nxt)
    want = torch.stack([full[r, s : s + 4] for r, s in zip(rows, starts, strict=True)])
    torch.testing.assert_close(dec.logits, want, atol=1e-4, rtol=1e-4)
    # decoding token by token from the same states gives the same logits
    with torch.no_grad():
        states, step_logits = enc.states, []
        for i in range(4):
            out = decode(model, states, nxt[:, i : i + 1])
            states = out.states
            step_logits.append(out.logits[:, 0])
    torch.testing.assert_close(torch.stack(step_logits, 1), want, atol=1e-4, rtol=1e-4)


def test_gradient_through_states_matches_reencoding(arch):
    model = _model(arch)
    x = torch.randint(0, VOCAB, (2, 33))
    at = torch.tensor([[11], [25]])
    cont = torch.randint(0, VOCAB, (2, 3))

    def grads(states_fn):
        model.zero_grad()
        states = states_fn()
        decode(model, states, cont).logits.logsumexp(-1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    g_enc = grads(lambda: encode(model, x, at).states)
    g_ref = grads(lambda: reencode_states(model, x, at))
    assert g_enc.keys() == g_ref.keys() and len(g_enc) > 0
    for name in g_ref:
        torch.testing.assert_close(g_enc[name], g_ref[name], atol=1e-5, rtol=1e-4, msg=name)
    # the prefix's writes get gradient: embeddings of prefix tokens are touched
    emb = next(n for n in g_enc if "embed" in n)
    assert g_enc[emb][x[0, :11]].abs().sum() > 0


def test_select_and_cat_are_inverse():
    model = _model("delta_net")
    x = torch.randint(0, VOCAB, (3, 20))
    with torch.no_grad():
        states = encode(model, x, torch.tensor([[4], [8], [12]])).states
    parts = [select_rows(states, torch.tensor([i])) for i in range(3)]
    assert _max_diff(cat_states(parts), states) == 0
    doubled = map_states(states, lambda t: t.repeat_interleave(2, 0))
    assert _max_diff(select_rows(doubled, torch.tensor([0, 2, 4])), states) == 0


def test_positions_out_of_range_are_rejected():
    model = _model("delta_net")
    with pytest.raises(ValueError, match="positions"):
        encode(model, torch.zeros(1, 10, dtype=torch.long), torch.tensor([[11]]))


@pytest.mark.parametrize("arch", ["delta_net", "lact"])
def test_recorded_states_equal_segment_split(arch):
    """States rebuilt after one forward == states carried segment by segment, values and gradients,
    at chunk boundaries (64 for DeltaNet's chunked form, 16 for this LaCT), inside chunks and at S.
    float64: in float32 LaCT's Newton-Schulz amplifies rounding to ~1e-4 of the gradient scale."""
    model = _model(arch).double()
    assert can_record(model)
    x = torch.randint(0, VOCAB, (2, 130))
    at = torch.tensor([[1, 16, 64, 77], [32, 100, 128, 130]])
    cont = torch.randint(0, VOCAB, (8, 3))

    def run(encode_fn):
        model.zero_grad()
        enc = encode_fn()
        dec = decode(model, enc.states, cont)
        (dec.logits.logsumexp(-1).sum() + enc.logits.logsumexp(-1).mean()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return enc, grads

    fast, g_fast = run(lambda: encode(model, x, at))
    slow, g_slow = run(lambda: encode_segments(model, x, at))
    torch.testing.assert_close(fast.logits, slow.logits, atol=1e-8, rtol=1e-8)
    assert _max_diff(fast.states, slow.states) < 1e-6  # _max_diff compares in float32
    assert g_fast.keys() == g_slow.keys()
    for name in g_slow:
        torch.testing.assert_close(g_fast[name], g_slow[name], atol=1e-6, rtol=1e-6, msg=name)


def test_gated_deltanet_has_no_recorder_and_uses_segments():
    assert not can_record(_model("gated_deltanet"))
    with pytest.raises(ValueError, match="no state recorder"):
        encode_recorded(_model("gated_deltanet"), torch.zeros(1, 8, dtype=torch.long))
