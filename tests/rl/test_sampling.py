"""Token sampling and token log-probabilities (refine/rl/sampling.py)."""

import math

import pytest
import torch

from refine.rl.sampling import filter_logits, sample_tokens, token_logprobs

PROBS = torch.tensor([0.1, 0.4, 0.3, 0.2])  # sorted: 1 (0.4), 2 (0.3), 3 (0.2), 0 (0.1)


def _frequencies(logits_row, rows=40000, **kwargs):
    logits = logits_row.expand(rows, -1)
    tokens = sample_tokens(logits, generator=torch.Generator().manual_seed(5), **kwargs)
    return torch.bincount(tokens, minlength=logits_row.shape[-1]).float() / rows


def test_greedy_is_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, -1.0, 2.5]])
    assert sample_tokens(logits, temperature=0.0).tolist() == [1, 2]


def test_plain_sampling_matches_softmax():
    freq = _frequencies(PROBS.log())
    torch.testing.assert_close(freq, PROBS, atol=0.01, rtol=0)


def test_top_k_keeps_the_k_largest_renormalised():
    freq = _frequencies(PROBS.log(), top_k=2)
    torch.testing.assert_close(freq, torch.tensor([0.0, 4 / 7, 3 / 7, 0.0]), atol=0.01, rtol=0)


def test_top_k_keeps_ties():
    kept = filter_logits(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 1.0, 1.0, top_k=2)
    assert torch.isfinite(kept).tolist() == [[False, True, True, False]]


def test_top_p_smallest_set_reaching_the_mass():
    # 0.4 < 0.6 -> also 0.3: {1, 2} has 0.7 >= 0.6; token 3 starts at 0.7 >= 0.6 -> dropped
    freq = _frequencies(PROBS.log(), top_p=0.6)
    torch.testing.assert_close(freq, torch.tensor([0.0, 4 / 7, 3 / 7, 0.0]), atol=0.01, rtol=0)
    # top_p 0.3: the top token alone (0.4) reaches it; token 2 starts at mass 0.4 -> dropped
    kept = torch.isfinite(filter_logits(PROBS.log().unsqueeze(0), 1.0, 0.3, 0))
    assert kept.tolist() == [[False, True, False, False]]


def test_top_p_tiny_keeps_top_token():
    assert (sample_tokens(PROBS.log().expand(50, -1), top_p=1e-6) == 1).all()


def test_temperature_sharpens():
    # T = 0.5 squares the probabilities before renormalising
    expected = PROBS**2 / (PROBS**2).sum()
    freq = _frequencies(PROBS.log(), temperature=0.5)
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)


def test_seeded_sampling_is_deterministic():
    logits = torch.randn(64, 50)
    a = sample_tokens(logits, generator=torch.Generator().manual_seed(1))
    b = sample_tokens(logits, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape == (64,)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_k": -1}, "top_k")],
)
def test_bad_arguments_raise(kwargs, key):
    with pytest.raises(ValueError, match=key):
        sample_tokens(torch.zeros(1, 3), **kwargs)


def test_token_logprobs_by_hand_and_fp32():
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]], dtype=torch.bfloat16)  # [1, 2, 2]
    tokens = torch.tensor([[1, 0]])
    out = token_logprobs(logits, tokens)
    assert out.dtype == torch.float32 and out.shape == (1, 2)
    torch.testing.assert_close(out, torch.tensor([[math.log(0.75), math.log(0.5)]]), atol=5e-3, rtol=0)


def test_token_logprobs_matches_log_softmax_and_has_grad():
    logits = torch.randn(3, 4, 11, requires_grad=True)
    tokens = torch.randint(0, 11, (3, 4))
    out = token_logprobs(logits, tokens)
    ref = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_token_logprobs_divide_by_the_sampling_temperature(temperature):
    logits = torch.randn(5, 11)
    tokens = torch.randint(0, 11, (5,))
    out = token_logprobs(logits, tokens, temperature)
    ref = torch.log_softmax(logits / temperature, -1).gather(-1, tokens[:, None])[:, 0]
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, token_logprobs(logits, tokens))
    torch.testing.assert_close(token_logprobs(logits, tokens, 0.0), token_logprobs(logits, tokens))  # greedy


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_suppressed_tokens_are_never_drawn(temperature):
    logits = torch.zeros(200, 6)
    logits[:, 2] = 50.0  # token 2 would be drawn every time
    drawn = sample_tokens(logits, temperature, suppress_tokens=(2, 4), generator=torch.Generator().manual_seed(0))
    assert not ((drawn == 2) | (drawn == 4)).any()
    assert set(drawn.tolist()) == ({0} if temperature == 0 else {0, 1, 3, 5})
    assert (sample_tokens(logits, temperature) == 2).all()
