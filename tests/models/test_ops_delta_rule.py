"""The torch delta-rule ops against fla's naive references, and chunked == recurrent == per-sequence."""

import pytest
import torch
import torch.nn.functional as F
from fla.ops.delta_rule.naive import delta_rule_recurrence
from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule

from refine.models.ops import delta_rule
from refine.models.ops.delta_rule import chunk_delta_rule, recurrent_delta_rule
from refine.models.ops.gated_delta_rule import chunk_gated_delta_rule, gdn_gate, recurrent_gated_delta_rule

B, T, H, K, V = 2, 63, 2, 60, 36


def _inputs(dtype=torch.float32, heads_v=H, gated=False):
    """Leaf tensors q, k, v, beta (post-sigmoid), g (log decay) and h0 [B, HV, K, V]."""
    tensors = {
        "q": torch.randn(B, T, H, K, dtype=dtype),
        "k": torch.randn(B, T, H, K, dtype=dtype),
        "v": torch.randn(B, T, heads_v, V, dtype=dtype),
        "beta": torch.rand(B, T, heads_v, dtype=dtype),
        "h0": torch.randn(B, heads_v, K, V, dtype=dtype),
    }
    if gated:
        tensors["g"] = F.logsigmoid(torch.randn(B, T, heads_v, dtype=dtype) + 2.0)
    return {name: x.requires_grad_() for name, x in tensors.items()}


def _grads(out: tuple[torch.Tensor, torch.Tensor], leaves: dict) -> dict:
    o, state = out
    loss = (o * torch.linspace(-1, 1, o.shape[-1], dtype=o.dtype)).sum() + (state * state).sum()
    names = list(leaves)
    return dict(
        zip(names, torch.autograd.grad(loss, [leaves[n] for n in names], retain_graph=True), strict=True)
    )


def _assert_close(actual: dict, expected: dict, atol: float, rtol: float):
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=atol, rtol=rtol, msg=name)


@pytest.mark.parametrize("form", ["chunk16", "chunk64", "recurrent"])
def test_delta_rule_matches_naive(form):
    x = _inputs()
    k = F.normalize(x["k"], dim=-1)
    if form == "recurrent":
        out = recurrent_delta_rule(
            x["q"], k, x["v"], x["beta"], initial_state=x["h0"], output_final_state=True
        )
    else:
        out = chunk_delta_rule(
            x["q"],
            k,
            x["v"],
            x["beta"],
            initial_state=x["h0"],
            output_final_state=True,
            chunk_size=int(form[5:]),
        )
    head_first = [t.transpose(1, 2) for t in (x["q"], k, x["v"], x["beta"])]
    o_ref, s_ref = delta_rule_recurrence(*head_first, initial_state=x["h0"], output_final_state=True)
    ref = (o_ref.transpose(1, 2), s_ref)
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1], ref[1], atol=1e-5, rtol=1e-4)
    _assert_close(_grads(out, x), _grads(ref, x), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("form", ["chunk16", "chunk64", "recurrent"])
def test_gated_delta_rule_matches_naive(form):
    x = _inputs(gated=True)
    q, k = F.normalize(x["q"], dim=-1), F.normalize(x["k"], dim=-1)
    args = (q, k, x["v"], x["g"], x["beta"])
    if form == "recurrent":
        out = recurrent_gated_delta_rule(
            q, k, x["v"], g=x["g"], beta=x["beta"], initial_state=x["h0"], output_final_state=True
        )
    else:
        out = chunk_gated_delta_rule(
            *args, initial_state=x["h0"], output_final_state=True, chunk_size=int(form[5:])
        )
    ref = naive_recurrent_gated_delta_rule(
        q, k, x["v"], x["beta"], x["g"], initial_state=x["h0"], output_final_state=True
    )
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[1], ref[1], atol=1e-5, rtol=1e-4)
    _assert_close(_grads(out, x), _grads(ref, x), atol=1e-4, rtol=1e-3)


def test_gated_kernel_options_match_naive():
    """Gate, beta sigmoid, neg. eigenvalues, in-kernel L2 norm, GVA and the V-first state layout."""
    x = _inputs(heads_v=2 * H)
    raw_g = torch.randn(B, T, 2 * H, requires_grad=True)
    A_log = torch.randn(2 * H, requires_grad=True)
    dt_bias = torch.randn(2 * H, requires_grad=True)
    leaves = {**x, "raw_g": raw_g, "A_log": A_log, "dt_bias": dt_bias}
    options = dict(
        use_qk_l2norm_in_kernel=True,
        use_gate_in_kernel=True,
        A_log=A_log,
        dt_bias=dt_bias,
        use_beta_sigmoid_in_kernel=True,
        allow_neg_eigval=True,
        state_v_first=True,
        initial_state=x["h0"].transpose(-1, -2),
        output_final_state=True,
    )
    chunked = chunk_gated_delta_rule(x["q"], x["k"], x["v"], raw_g, x["beta"], chunk_size=16, **options)
    recurrent = recurrent_gated_delta_rule(x["q"], x["k"], x["v"], g=raw_g, beta=x["beta"], **options)

    def expand(t):
        return F.normalize(t, dim=-1, eps=0).repeat_interleave(2, dim=2)

    g = -A_log.exp() * F.softplus(raw_g + dt_bias)
    o_ref, s_ref = naive_recurrent_gated_delta_rule(
        expand(x["q"]),
        expand(x["k"]),
        x["v"],
        2 * x["beta"].sigmoid(),
        g,
        initial_state=x["h0"],
        output_final_state=True,
    )
    ref = (o_ref, s_ref.transpose(-1, -2))
    for out in (chunked, recurrent):
        torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(out[1], ref[1], atol=1e-4, rtol=1e-4)
        _assert_close(_grads(out, leaves), _grads(ref, leaves), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(gdn_gate(raw_g, A_log, dt_bias), g)


@pytest.mark.parametrize("gated", [False, True])
def test_chunked_equals_recurrent_float64(gated):
    x = _inputs(torch.float64, gated=gated)
    extra = {"g": x["g"]} if gated else {}
    common = dict(scale=0.3, initial_state=x["h0"], output_final_state=True, use_qk_l2norm_in_kernel=True)
    if gated:
        chunked = chunk_gated_delta_rule(
            x["q"], x["k"], x["v"], beta=x["beta"], chunk_size=16, **extra, **common
        )
        recurrent = recurrent_gated_delta_rule(x["q"], x["k"], x["v"], beta=x["beta"], **extra, **common)
    else:
        chunked = chunk_delta_rule(x["q"], x["k"], x["v"], x["beta"], chunk_size=16, **common)
        recurrent = recurrent_delta_rule(x["q"], x["k"], x["v"], x["beta"], **common)
    assert chunked[1].dtype == torch.float64
    torch.testing.assert_close(chunked[0], recurrent[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(chunked[1], recurrent[1], atol=1e-10, rtol=1e-10)
    _assert_close(_grads(chunked, x), _grads(recurrent, x), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_varlen_equals_separate_sequences(gated, chunked):
    lens = [5, 40, 18]
    cu_seqlens = torch.tensor([0, 5, 45, 63], dtype=torch.int32)
    q, k = torch.randn(1, T, H, K, dtype=torch.float64), torch.randn(1, T, H, K, dtype=torch.float64)
    v, beta = torch.randn(1, T, H, V, dtype=torch.float64), torch.rand(1, T, H, dtype=torch.float64)
    g = F.logsigmoid(torch.randn(1, T, H, dtype=torch.float64))
    h0 = torch.randn(len(lens), H, K, V, dtype=torch.float64)

    def run(q, k, v, beta, g, h0, cu_seqlens=None):
        common = dict(
            initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True, cu_seqlens=cu_seqlens
        )
        if gated and chunked:
            return chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=16, **common)
        if gated:
            return recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, **common)
        if chunked:
            return chunk_delta_rule(q, k, v, beta, chunk_size=16, **common)
        return recurrent_delta_rule(q, k, v, beta, **common)

    o, state = run(q, k, v, beta, g, h0, cu_seqlens)
    starts = cu_seqlens[:-1].tolist()
    for n, (start, length) in enumerate(zip(starts, lens, strict=True)):
        piece = [t[:, start : start + length] for t in (q, k, v, beta, g)]
        o_n, state_n = run(*piece, h0[n : n + 1])
        torch.testing.assert_close(o[:, start : start + length], o_n, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(state[n : n + 1], state_n, atol=1e-12, rtol=1e-10)


def test_state_carried_in_segments_equals_one_pass():
    x = _inputs(torch.float64, gated=True)
    args = dict(use_qk_l2norm_in_kernel=True, output_final_state=True)
    o_full, s_full = chunk_gated_delta_rule(
        x["q"], x["k"], x["v"], x["g"], x["beta"], initial_state=x["h0"], **args
    )
    state, outputs = x["h0"], []
    for start, stop in [(0, 1), (1, 30), (30, 31), (31, T)]:
        piece = [x[n][:, start:stop] for n in ("q", "k", "v", "g", "beta")]
        o, state = recurrent_gated_delta_rule(
            piece[0], piece[1], piece[2], g=piece[3], beta=piece[4], initial_state=state, **args
        )
        outputs.append(o)
    torch.testing.assert_close(torch.cat(outputs, dim=1), o_full, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state, s_full, atol=1e-10, rtol=1e-10)


def test_half_precision_inputs_keep_dtype_and_float32_state():
    x = _inputs()
    q, k, v, beta = (x[n].detach().bfloat16() for n in ("q", "k", "v", "beta"))
    o, state = chunk_delta_rule(q, k, v, beta, output_final_state=True, use_qk_l2norm_in_kernel=True)
    o32, state32 = chunk_delta_rule(
        *(t.float() for t in (q, k, v, beta)), output_final_state=True, use_qk_l2norm_in_kernel=True
    )
    assert o.dtype == torch.bfloat16 and state.dtype == torch.float32
    torch.testing.assert_close(o.float(), o32, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(state, state32)


def test_bad_arguments_are_rejected():
    x = _inputs()
    q, k, v = x["q"], x["k"], x["v"]
    with pytest.raises(ValueError, match="beta"):
        chunk_delta_rule(q, k, v, torch.rand(B, T, H, V))
    with pytest.raises(ValueError, match="batch size"):
        chunk_delta_rule(q, k, v, x["beta"], cu_seqlens=torch.tensor([0, T]))
    with pytest.raises(ValueError, match="A_log"):
        chunk_gated_delta_rule(q, k, v, x["beta"], x["beta"], use_gate_in_kernel=True)
    with pytest.raises(ValueError, match="gk"):
        recurrent_gated_delta_rule(q, k, v, gk=torch.zeros(B, T, H, K))


@pytest.mark.parametrize("seq_len", [1, 8, 9, 33, 64])
def test_short_input_entry_matches_token_recurrence(seq_len):
    """fla's ≤64-token entry point gives the token recurrence's results whichever form it uses."""
    torch.manual_seed(seq_len)
    q, k = torch.randn(2, seq_len, 2, 12), torch.randn(2, seq_len, 2, 12)
    v, beta = torch.randn(2, seq_len, 2, 10), torch.rand(2, seq_len, 2)
    h0 = torch.randn(2, 2, 12, 10)
    args = dict(initial_state=h0, output_final_state=True, use_qk_l2norm_in_kernel=True)
    o_ref, s_ref = delta_rule.recurrent_delta_rule(q, k, v, beta, **args)
    o, s = delta_rule.short_input_delta_rule(q, k, v, beta, **args)
    torch.testing.assert_close(o, o_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)
