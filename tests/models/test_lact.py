"""LaCT: chunked == segment-carried == token-by-token, mixed-position batches, padding, gradients, I/O."""

import pytest
import torch
from fla.models.utils import Cache
from transformers import AutoModelForCausalLM

from refine.models.lact import LACT_760M, LACT_TINY, LaCTConfig, LaCTForCausalLM
from refine.models.ops.lact_naive import naive_block_causal_fast_weights
from refine.models.ops.lact_ops import block_causal_fast_weights, plan_segment, swiglu_apply

SMALL = dict(
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=2,
    num_attn_heads=4,
    num_lact_heads=2,
    window_size=6,
    lact_chunk_size=5,
    hidden_ratio=2,
    initializer_range=0.05,
)
VARIANTS = {  # use_momentum, use_muon, ttt_prenorm, ttt_nope, attn_qk_norm
    "plain": (False, False, False, False, False),
    "momentum": (True, False, False, False, True),
    "momentum_muon_nope": (True, True, False, True, False),
    "muon_prenorm": (False, True, True, False, False),
}


def make_model(variant: str = "momentum_muon_nope", **overrides) -> LaCTForCausalLM:
    momentum, muon, prenorm, nope, qk_norm = VARIANTS[variant]
    config = LaCTConfig(
        **dict(
            SMALL,
            use_momentum=momentum,
            use_muon=muon,
            ttt_prenorm=prenorm,
            ttt_nope=nope,
            attn_qk_norm=qk_norm,
            **overrides,
        )
    )
    model = LaCTForCausalLM(config).eval()
    with (
        torch.no_grad()
    ):  # learning rates near 1 (the 1e-3 init barely moves them) so that fast-weight updates matter
        for block in model.model.layers:
            block.attn.lr_proj.bias.fill_(7.0)
            if momentum:
                block.attn.momentum_proj[0].bias.fill_(1.0)
    return model


def run_segments(model, ids, bounds, cache=None):
    logits = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        out = model(ids[:, lo:hi], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logits.append(out.logits)
    return torch.cat(logits, dim=1), cache


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_full_equals_segments_equals_decode(variant):
    model = make_model(variant)
    ids = torch.randint(0, 50, (2, 23))
    with torch.no_grad():
        full = model(ids).logits
        segmented, cache = run_segments(model, ids, [0, 3, 4, 12, 23])
        decoded, _ = run_segments(model, ids, list(range(24)))
        fresh = model(ids[:, 12:]).logits  # the same tokens without the carried state
    torch.testing.assert_close(segmented, full, atol=1e-4, rtol=0)
    torch.testing.assert_close(decoded, full, atol=1e-4, rtol=0)
    assert (fresh - full[:, 12:]).abs().max() > 1e-2  # the state carries information
    state = cache.layers[0].state["recurrent_state"]
    assert state["pos"].tolist() == [23, 23]
    assert (state["w0"] - model.model.layers[0].attn.w0).abs().max() > 1e-2  # fast weights were written
    assert (state["k"][:, 23 % 5 :] == 0).all() and (state["k"][:, : 23 % 5] != 0).any()


def test_state_tensors_are_batch_first():
    model = make_model()
    with torch.no_grad():
        cache = model(torch.randint(0, 50, (3, 7)), use_cache=True).past_key_values
    assert isinstance(cache, Cache) and len(cache.layers) == 2
    for layer in cache.layers:
        for name, value in layer.state["recurrent_state"].items():
            assert isinstance(value, torch.Tensor) and value.shape[0] == 3, name


def stack_caches(caches):
    stacked = Cache()
    for i in range(len(caches[0].layers)):
        stacked.layers.append(stacked.layer_class_to_replicate())
        parts = [cache.layers[i].state["recurrent_state"] for cache in caches]
        merged = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        stacked.layers[i].state = {"recurrent_state": merged}
    return stacked


@pytest.mark.parametrize("variant", ["momentum_muon_nope", "muon_prenorm"])
def test_stacked_states_from_different_positions_decode_like_separate(variant):
    model = make_model(variant)
    ids = torch.randint(0, 50, (2, 20))
    next_tokens = torch.randint(0, 50, (2, 3))
    with torch.no_grad():
        caches = [
            model(ids[:1, :7], use_cache=True).past_key_values,
            model(ids[1:, :14], use_cache=True).past_key_values,
        ]
        alone = [run_segments(model, next_tokens[b : b + 1], [0, 1, 2, 3], caches[b])[0] for b in range(2)]
        caches = [
            model(ids[:1, :7], use_cache=True).past_key_values,
            model(ids[1:, :14], use_cache=True).past_key_values,
        ]
        together, _ = run_segments(model, next_tokens, [0, 1, 2, 3], stack_caches(caches))
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-4, rtol=0)


def test_left_padding_equals_unpadded_rows():
    model = make_model("momentum")
    lengths, width = [23, 14], 23
    rows = [torch.randint(1, 50, (1, n)) for n in lengths]
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, width - row.shape[1] :], mask[b, width - row.shape[1] :] = row, 1
    step = torch.randint(1, 50, (2, 2))
    with torch.no_grad():
        padded = model(ids, attention_mask=mask, use_cache=True)
        mask2 = torch.cat([mask, torch.ones(2, 2, dtype=torch.long)], dim=1)
        after = model(
            step, attention_mask=mask2, past_key_values=padded.past_key_values, use_cache=True
        ).logits
        for b, row in enumerate(rows):
            alone = model(torch.cat([row, step[b : b + 1]], dim=1)).logits
            n = row.shape[1]
            torch.testing.assert_close(padded.logits[b, width - n :], alone[0, :n], atol=1e-4, rtol=0)
            torch.testing.assert_close(after[b], alone[0, n:], atol=1e-4, rtol=0)


def test_generate_left_padded_matches_greedy_per_row():
    model = make_model("momentum_muon_nope", pad_token_id=0)
    ids = torch.randint(1, 50, (2, 9))
    mask = torch.ones_like(ids)
    ids[1, :4], mask[1, :4] = 0, 0
    with torch.no_grad():
        generated = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)[:, -4:]
        for b in range(2):
            seq = ids[b : b + 1, mask[b].bool()]
            for _ in range(4):
                seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            assert seq[0, -4:].tolist() == generated[b].tolist()


def test_loss_and_hidden_states():
    model = make_model()
    ids = torch.randint(0, 50, (2, 12))
    labels = ids.clone()
    labels[0, :4] = -100
    out = model(ids, labels=labels, output_hidden_states=True)
    assert len(out.hidden_states) == SMALL["num_hidden_layers"] + 1
    torch.testing.assert_close(model.lm_head(out.hidden_states[-1]), out.logits)
    expected = torch.nn.functional.cross_entropy(
        out.logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1)
    )
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("variant", ["momentum", "muon_prenorm"])
def test_gradients_reach_every_parameter(variant):
    model = make_model(variant).train()
    ids = torch.randint(1, 50, (2, 18))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # a left-padded row: padding must not produce NaN gradients
    model(ids, attention_mask=mask, labels=ids).loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


def test_save_and_load_round_trip(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, LaCTForCausalLM)
    ids = torch.randint(0, 50, (1, 13))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="lr_dim"):
        LaCTConfig(**dict(SMALL, lr_dim=2))
    with pytest.raises(ValueError, match="num_lact_heads"):
        LaCTConfig(**dict(SMALL, num_lact_heads=3))


def test_named_configs_build():
    tiny = LaCTForCausalLM(LaCTConfig(**LACT_TINY))
    assert 0.5e6 < sum(p.numel() for p in tiny.parameters()) < 5e6
    with torch.device("meta"):
        big = LaCTForCausalLM(LaCTConfig(**LACT_760M))
    total = sum(p.numel() for p in big.parameters())
    embeddings = big.model.embeddings.weight.numel() + big.lm_head.weight.numel()
    assert abs((total - embeddings) / 760e6 - 1) < 0.10, (total, total - embeddings)


@pytest.mark.parametrize(
    "use_muon,prenorm,momentum", [(False, False, False), (True, False, True), (True, True, True)]
)
def test_fast_weight_op_matches_autograd_reference(use_muon, prenorm, momentum):
    heads, dim, hidden, length, chunk = 2, 6, 9, 17, 4
    f64 = dict(dtype=torch.float64)  # Newton-Schulz amplifies rounding: compare in double precision
    w = tuple(
        torch.randn(heads, *shape, **f64) / 3 for shape in [(hidden, dim), (dim, hidden), (hidden, dim)]
    )
    q, k, v = (torch.randn(1, length, heads, dim, **f64) for _ in range(3))
    lr = torch.rand(1, length, heads, 3, **f64)
    gate = torch.rand(1, length, heads, **f64) if momentum else None
    plan = plan_segment(
        torch.ones(1, length, dtype=torch.bool), torch.zeros(1, dtype=torch.long), chunk, False
    )
    fw = {f"w{i}": x[None] for i, x in enumerate(w)}
    if prenorm:
        fw.update({f"a{i}": x[None] for i, x in enumerate(w)})
    aligned = {"k": k, "v": v, "lr": lr}
    if momentum:
        fw.update({f"m{i}": torch.zeros_like(x[None]) for i, x in enumerate(w)})
        aligned["gate"] = gate
    aligned = {
        name: torch.cat([x, x.new_zeros(1, plan.aligned_len - length, *x.shape[2:])], 1)
        for name, x in aligned.items()
    }
    norms = tuple(x.norm(dim=-1, keepdim=True) for x in w)
    out, _ = block_causal_fast_weights(plan, fw, q, aligned, norms, chunk, use_muon, prenorm)
    expected = naive_block_causal_fast_weights(
        w, q[0], k[0], v[0], lr[0], None if gate is None else gate[0], chunk, use_muon, prenorm
    )
    torch.testing.assert_close(out[0], expected, atol=1e-10, rtol=1e-10)
    assert (
        expected[chunk:] - swiglu_apply(fw, q[:, chunk:])[0]
    ).abs().max() > 1e-3  # updates changed outputs


def test_only_rows_that_complete_a_chunk_are_updated():
    """One decode token from rows at different fill levels: the row that fills its chunk updates (same
    weights as updating it alone), the others keep theirs, and the plan names just that row."""
    chunk, heads, dim = 4, 2, 6
    start = torch.tensor([3, 1, 6])  # fill levels 3, 1, 2: only row 0 completes its chunk
    plan = plan_segment(torch.ones(3, 1, dtype=torch.bool), start, chunk, True)
    assert len(plan.update_rows) == 1 and plan.update_rows[0].tolist() == [0]
    full = plan_segment(torch.ones(3, 8, dtype=torch.bool), torch.zeros(3, dtype=torch.long), chunk, True)
    assert full.update_rows == [None, None]  # a forward from the start: every row updates every chunk
    fw = {f"w{i}": torch.randn(3, heads, dim, dim) / 3 for i in range(3)}
    aligned = {"k": torch.randn(3, chunk * 2, heads, dim), "v": torch.randn(3, chunk * 2, heads, dim)}
    aligned["lr"] = torch.rand(3, chunk * 2, heads, 3)
    q = torch.randn(3, 1, heads, dim)
    norms = tuple(torch.ones(heads, dim, 1) for _ in range(3))
    _, new = block_causal_fast_weights(plan, fw, q, aligned, norms, chunk, True, False)
    alone = plan_segment(torch.ones(1, 1, dtype=torch.bool), start[:1], chunk, True)
    _, row0 = block_causal_fast_weights(
        alone, {n: w[:1] for n, w in fw.items()}, q[:1], {n: a[:1] for n, a in aligned.items()}, norms,
        chunk, True, False,
    )  # fmt: skip
    for name in fw:
        torch.testing.assert_close(new[name][:1], row0[name])
        torch.testing.assert_close(new[name][1:], fw[name][1:], atol=0, rtol=0)
        assert not torch.allclose(new[name][0], fw[name][0])


@pytest.mark.parametrize("no_v_silu", [False, True])
def test_no_v_silu_feeds_v_linear_to_the_fast_weights(monkeypatch, no_v_silu):
    """Official HEAD (a1600012888/LaCT 1f84d47): with qkv_silu, no_v_silu skips silu on v only."""
    import refine.models.lact.modeling_lact as lact_module

    model = make_model("plain", no_v_silu=no_v_silu)
    aligned_inputs = []

    def recording_align(plan, pending, value):
        aligned_inputs.append(value)
        return lact_module_align(plan, pending, value)

    lact_module_align = lact_module.align_tokens
    monkeypatch.setattr(lact_module, "align_tokens", recording_align)
    projected = []
    attn = model.model.layers[0].attn
    attn.qkv.register_forward_hook(lambda module, args, out: projected.append(out))
    with torch.no_grad():
        model(torch.randint(0, SMALL["vocab_size"], (2, 7)))
    v_linear = projected[0].chunk(3, dim=-1)[2].view(2, 7, attn.num_fw_heads, attn.fw_head_dim)
    fast_v = aligned_inputs[1]  # layer 0 aligns k, v, lr in that order
    expected = v_linear if no_v_silu else torch.nn.functional.silu(v_linear)
    torch.testing.assert_close(fast_v, expected, rtol=0, atol=0)
