"""Short convolution, norms, activations, losses and the backend switch of the torch fla backend."""

import fla
import pytest
import torch
import torch.nn.functional as F
from fla.modules import ShortConvolution

from refine.models import backend
from refine.models.ops import conv, delta_rule, gated_delta_rule, loss, norm
from refine.models.ops.conv import causal_conv1d

B, T, D, W = 2, 37, 20, 4


def _reference_conv(x, weight, bias, activation):
    """The obviously-correct form: a zero-padded depthwise nn.Conv1d, truncated to T outputs."""
    y = F.conv1d(x.transpose(1, 2), weight[:, None, :], bias, padding=W - 1, groups=D)[..., : x.shape[1]]
    y = y.transpose(1, 2)
    return F.silu(y) if activation else y


@pytest.mark.parametrize("activation", [None, "silu"])
def test_conv_matches_padded_conv1d_and_caches_last_inputs(activation):
    x, weight, bias = torch.randn(B, T, D), torch.randn(D, W), torch.randn(D)
    y, cache = causal_conv1d(x, weight, bias, activation=activation, output_final_state=True)
    torch.testing.assert_close(y, _reference_conv(x, weight, bias, activation))
    torch.testing.assert_close(cache, x[:, -W:].transpose(1, 2))
    _, short_cache = causal_conv1d(x[:, :2], weight, output_final_state=True)
    torch.testing.assert_close(short_cache[..., : W - 2], torch.zeros(B, D, W - 2))
    torch.testing.assert_close(short_cache[..., W - 2 :], x[:, :2].transpose(1, 2))


def test_conv_in_pieces_with_cache_equals_whole_with_gradients():
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(D, W, dtype=torch.float64, requires_grad=True)
    residual = torch.randn(B, T, D, dtype=torch.float64)
    y_full, cache_full = causal_conv1d(
        x, weight, residual=residual, activation="silu", output_final_state=True
    )
    cache, pieces = None, []
    for start, stop in [(0, 2), (2, 3), (3, 20), (20, 21), (21, T)]:
        y, cache = causal_conv1d(
            x[:, start:stop],
            weight,
            residual=residual[:, start:stop],
            initial_state=cache,
            activation="silu",
            output_final_state=True,
        )
        pieces.append(y)
    y_pieces = torch.cat(pieces, dim=1)
    torch.testing.assert_close(y_pieces, y_full, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(cache, cache_full, atol=0, rtol=0)
    grads_full = torch.autograd.grad((y_full * y_full).sum() + cache_full.sum(), [x, weight])
    grads_pieces = torch.autograd.grad((y_pieces * y_pieces).sum() + cache.sum(), [x, weight])
    for got, expected in zip(grads_pieces, grads_full, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_conv_varlen_equals_separate_sequences():
    lens, cu_seqlens = [2, 30, 5], torch.tensor([0, 2, 32, 37], dtype=torch.int32)
    x, weight = torch.randn(1, T, D), torch.randn(D, W)
    h0 = torch.randn(len(lens), D, W)
    y, cache = causal_conv1d(
        x, weight, initial_state=h0, output_final_state=True, cu_seqlens=cu_seqlens, activation="silu"
    )
    for n, (start, length) in enumerate(zip(cu_seqlens[:-1].tolist(), lens, strict=True)):
        y_n, cache_n = causal_conv1d(
            x[:, start : start + length],
            weight,
            initial_state=h0[n : n + 1],
            output_final_state=True,
            activation="silu",
        )
        torch.testing.assert_close(y[:, start : start + length], y_n)
        torch.testing.assert_close(cache[n : n + 1], cache_n)


def test_short_convolution_forward_matches_module_conv_and_never_writes_in_place():
    module = ShortConvolution(hidden_size=D, kernel_size=W, bias=True, activation="silu")
    x, mask = torch.randn(B, T, D), torch.ones(B, T)
    mask[0, :5] = 0
    y, cache = conv.short_convolution_forward(module, x, mask=mask, output_final_state=True)
    expected = F.silu(torch.nn.Conv1d.forward(module, (x * mask[..., None]).transpose(1, 2))[..., :T])
    torch.testing.assert_close(y, expected.transpose(1, 2))
    frozen = cache.clone()
    with torch.no_grad():
        step, new_cache = conv.short_convolution_forward(
            module, x[:, :1], cache=cache, output_final_state=True
        )
    torch.testing.assert_close(cache, frozen, atol=0, rtol=0)
    torch.testing.assert_close(new_cache[..., :-1], cache[..., 1:])


def test_rms_norm_prenorm_residual_and_dtypes():
    x, residual = torch.randn(3, 5, D), torch.randn(3, 5, D)
    weight, bias = torch.randn(D), torch.randn(D)
    y, stream = norm.rms_norm(x, weight, bias, residual=residual, eps=1e-5, prenorm=True)
    torch.testing.assert_close(stream, x + residual)
    torch.testing.assert_close(y, F.rms_norm(x + residual, (D,), weight, eps=1e-5) + bias)
    y16, stream16 = norm.rms_norm(x.bfloat16(), weight, None, prenorm=True, residual_in_fp32=True)
    assert y16.dtype == torch.bfloat16 and stream16.dtype == torch.float32
    assert torch.equal(norm.rms_norm(x, weight, None), norm.rms_norm(x, weight, None, prenorm=True)[0])


@pytest.mark.parametrize("activation", ["swish", "sigmoid"])
def test_rms_norm_gated_is_norm_times_gate(activation):
    x, g, weight = torch.randn(4, 3, D), torch.randn(4, 3, D), torch.randn(D)
    gate = F.silu(g) if activation == "swish" else torch.sigmoid(g)
    expected = F.rms_norm(x, (D,), weight, eps=1e-6) * gate
    torch.testing.assert_close(norm.rms_norm_gated(x, g, weight, None, activation=activation), expected)
    with pytest.raises(ValueError, match="activation"):
        norm.rms_norm_gated(x, g, weight, None, activation="relu")


def test_swiglu_and_elu_p1():
    x, y, weight, bias = torch.randn(6, 8), torch.randn(6, 8), torch.randn(5, 8), torch.randn(5)
    torch.testing.assert_close(norm.swiglu(x, y), x * torch.sigmoid(x) * y)
    torch.testing.assert_close(
        norm.swiglu_linear(x, y, weight, bias), (x * torch.sigmoid(x) * y) @ weight.T + bias
    )
    torch.testing.assert_close(norm.elu_p1(x), torch.where(x > 0, x + 1, x.exp()))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_losses_match_cross_entropy_with_ignored_tokens(reduction):
    hidden, weight = torch.randn(2, 7, D), torch.randn(11, D)
    target = torch.randint(0, 11, (2, 7))
    target[0, :3] = -100
    logits = hidden @ weight.T
    expected = F.cross_entropy(logits.reshape(-1, 11), target.reshape(-1), reduction=reduction)
    torch.testing.assert_close(loss.CrossEntropyLoss(reduction=reduction)(logits, target), expected)
    torch.testing.assert_close(
        loss.LinearCrossEntropyLoss(reduction=reduction)(hidden, target, weight), expected
    )
    warped = loss.LinearCrossEntropyLoss(reduction=reduction, use_l2warp=True)(hidden, target, weight)
    torch.testing.assert_close(warped, expected)


def test_activate_patches_and_restores_fla_names():
    import fla.layers.delta_net as fla_delta_net
    import fla.layers.gated_deltanet as fla_gated

    assert backend.activate("cpu") == "torch"
    assert backend.activate(torch.device("cpu")) == "torch"
    assert backend.active_backend() == "torch"
    assert fla_delta_net.chunk_delta_rule is delta_rule.chunk_delta_rule
    assert fla_delta_net.fused_recurrent_delta_rule is delta_rule.short_input_delta_rule
    assert fla_gated.fused_recurrent_gated_delta_rule is gated_delta_rule.recurrent_gated_delta_rule
    assert ShortConvolution.forward is conv.short_convolution_forward
    try:
        assert backend.activate("cuda") == "triton"
        assert backend.active_backend() == "triton"
        assert fla_delta_net.chunk_delta_rule is fla.ops.delta_rule.chunk_delta_rule
        assert ShortConvolution.forward is not conv.short_convolution_forward
    finally:
        backend.activate("cpu")
    assert ShortConvolution.forward is conv.short_convolution_forward


def test_version_and_device_checks():
    backend.check_fla_version()
    with pytest.raises(RuntimeError, match="0.6.0"):
        backend.check_fla_version("0.5.9")
    with pytest.raises(ValueError, match="device type"):
        backend.activate("meta")
