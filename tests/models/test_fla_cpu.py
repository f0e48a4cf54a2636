"""fla's DeltaNet and Gated DeltaNet causal LMs on the torch backend: caches, padding, saving, grads."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from refine.models import backend
from refine.models.fla_models import build_fla_model

VOCAB = 61
KINDS = ["delta_net", "gated_deltanet"]
ATOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _torch_backend():
    backend.activate("cpu")


def _model(kind: str, **overrides):
    torch.manual_seed(0)
    return build_fla_model(kind, VOCAB, initializer_range=0.1, pad_token_id=0, **overrides).eval()


def _ids(*shape):
    return torch.randint(1, VOCAB, shape)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grad", [False, True])
def test_prefill_then_continuation_equals_full_forward(kind, grad):
    model, ids = _model(kind), _ids(2, 90)
    with torch.set_grad_enabled(grad):
        full = model(ids).logits
        pieces, cache = [], None
        for start, stop in [(0, 70), (70, 71), (71, 90)]:  # chunked prefill, one token, a short segment
            out = model(ids[:, start:stop], past_key_values=cache, use_cache=True)
            pieces.append(out.logits)
            cache = out.past_key_values
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("delta_net", {"use_gate": True, "qk_activation": "elu", "qk_norm": "sum"}),
        ("delta_net", {"allow_neg_eigval": True, "use_beta": False}),
        ("gated_deltanet", {"num_v_heads": 4, "allow_neg_eigval": True, "output_gate_activation": "sigmoid"}),
    ],
)
def test_optional_layer_features_carry_state_like_a_full_forward(kind, options):
    model, ids = _model(kind, **options), _ids(2, 80)
    with torch.no_grad():
        full = model(ids).logits
        prefix = model(ids[:, :67], use_cache=True)
        rest = model(ids[:, 67:], past_key_values=prefix.past_key_values, use_cache=True)
    torch.testing.assert_close(torch.cat([prefix.logits, rest.logits], dim=1), full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_path_equals_chunked_path(kind):
    """The layers use the recurrent op for <= 64 tokens and the chunked op above."""
    model, ids = _model(kind), _ids(2, 65)
    with torch.no_grad():
        torch.testing.assert_close(model(ids[:, :64]).logits, model(ids).logits[:, :64], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_cached_greedy_decoding_equals_uncached_argmax_loop(kind):
    model, prompt = _model(kind), _ids(2, 12)
    with torch.no_grad():
        generated = model.generate(
            prompt, max_new_tokens=10, do_sample=False, attention_mask=torch.ones_like(prompt)
        )
        sequence = prompt
        for _ in range(10):
            sequence = torch.cat([sequence, model(sequence).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(generated, sequence)


@pytest.mark.parametrize("kind", KINDS)
def test_left_padded_batch_equals_per_row_runs(kind):
    model, long_row, short_row = _model(kind), _ids(75), _ids(50)
    pad = 75 - 50
    ids = torch.stack([long_row, torch.cat([torch.zeros(pad, dtype=torch.long), short_row])])
    mask = torch.ones_like(ids)
    mask[1, :pad] = 0
    step = _ids(2, 1)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, use_cache=True)
        batched_step = model(
            step,
            attention_mask=torch.cat([mask, torch.ones_like(step)], dim=1),
            past_key_values=batched.past_key_values,
            use_cache=True,
        ).logits
        for row, (tokens, start) in enumerate([(long_row, 0), (short_row, pad)]):
            alone = model(tokens[None], use_cache=True)
            torch.testing.assert_close(batched.logits[row, start:], alone.logits[0], atol=ATOL, rtol=0)
            alone_step = model(
                step[row : row + 1], past_key_values=alone.past_key_values, use_cache=True
            ).logits
            torch.testing.assert_close(batched_step[row], alone_step[0], atol=ATOL, rtol=0)
        generated = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        alone_generated = model.generate(short_row[None], max_new_tokens=6, do_sample=False)
    assert torch.equal(generated[1, pad:], alone_generated[0])


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_with_auto_class_gives_identical_logits(kind, tmp_path):
    model, ids = _model(kind), _ids(2, 20)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length", [32, 80])
def test_backward_reaches_every_parameter_with_finite_gradients(kind, length):
    model, ids = _model(kind).train(), _ids(2, length)
    loss = model(ids, labels=ids).loss
    assert math.isfinite(loss.item())
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_fused_config_options_route_to_the_same_numbers(kind):
    """Released checkpoints set fuse_norm/fuse_swiglu/fuse_cross_entropy: same weights, same outputs."""
    plain, ids = _model(kind), _ids(2, 40)
    fused = _model(kind, fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=True)
    fused.load_state_dict(plain.state_dict())
    linear_ce = _model(kind, fuse_linear_cross_entropy=True)
    linear_ce.load_state_dict(plain.state_dict())
    with torch.no_grad():
        expected = plain(ids, labels=ids)
        got = fused(ids, labels=ids)
        torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.loss, expected.loss, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(linear_ce(ids, labels=ids).loss, expected.loss, atol=1e-6, rtol=1e-6)


def test_unsupported_options_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        build_fla_model("lact", VOCAB)
    with pytest.raises(ValueError, match="hidden_act"):
        build_fla_model("delta_net", VOCAB, hidden_act="powlu")
