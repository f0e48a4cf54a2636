"""Official LaCT checkpoints: a model written in the authors' layout loads back with identical logits.

The official layout is produced by lact_convert's writer (`lact_to_official_state_dict` / `official_config_from_lact`
/ `write_official_checkpoint`, shared with the rehearsal's checkpoints), written key by key from the authors' module
tree (lact_llm/lact_model, commit 1f84d47), independently of lact_convert's mapping.
"""

import logging
import re

import pytest
import torch

from refine.models.lact import LaCTConfig, LaCTForCausalLM
from refine.models.lact_convert import OFFICIAL_CONFIG_FIELDS as OFFICIAL_FIELDS
from refine.models.lact_convert import lact_to_official_state_dict as official_state_dict
from refine.models.lact_convert import load_official_lact, official_config_to_lact, official_state_dict_to_lact
from refine.models.lact_convert import official_config_from_lact as official_config
from refine.models.lact_convert import write_official_checkpoint as write_checkpoint

TINY = dict(
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=2,
    num_attn_heads=4,
    num_lact_heads=2,
    inter_multi=2.0,
    window_size=6,
    lact_chunk_size=5,
    hidden_ratio=2,
    initializer_range=0.05,
)
AUTHORS_760M_MUON = {  # lact_llm/configs/760M_lact_swiglu_nh4_fwlow_rank_momentum_muon.json
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "fuse_cross_entropy": True,
    "fuse_norm": True,
    "hidden_act": "swish",
    "hidden_size": 1536,
    "num_attn_heads": 24,
    "num_hidden_layers": 24,
    "initializer_range": 0.02,
    "max_position_embeddings": 32768,
    "model_type": "lact_swiglu",
    "num_lact_heads": 4,
    "inter_multi": 1,
    "qkv_bias": False,
    "attn_qk_norm": False,
    "qkv_silu": True,
    "lact_chunk_size": 2048,
    "window_size": 2048,
    "use_muon": True,
    "lr_dim": 1,
    "lr_parameterization": "mamba",
    "learnable_ttt_scale": True,
    "w0_w2_low_rank": 32,
    "fw_init_gain": 0.5,
    "use_momentum": True,
    "rope_theta": 1000000,
    "norm_eps": 1e-06,
    "tie_word_embeddings": False,
    "use_cache": True,
    "vocab_size": 32000,
}


def make_model(**overrides) -> LaCTForCausalLM:
    """Tiny model whose every parameter is random (norm weights and qk_scale too, so a swap would show)."""
    model = LaCTForCausalLM(LaCTConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def set_low_rank(model: LaCTForCausalLM, rank: int) -> dict[str, torch.Tensor]:
    """Give w0/w2 the official low-rank form W = L @ R + 0.5 I; returns the factors by official key."""
    factors = {}
    for i, block in enumerate(model.model.layers):
        for name in ("w0", "w2"):
            weight = getattr(block.attn, name)
            heads, rows, cols = weight.shape
            left, right = torch.randn(heads, rows, rank) / rank**0.5, torch.randn(heads, rank, cols) / cols**0.5
            with torch.no_grad():
                weight.copy_(left @ right + 0.5 * torch.eye(rows, cols))
            factors[f"model.layers.{i}.attn.{name}.w_left"] = left
            factors[f"model.layers.{i}.attn.{name}.w_right"] = right
    return factors


CASES = {  # file format, low-rank rank (-1: full), model overrides
    "safetensors_full_qknorm_bias": ("safetensors", -1, dict(attn_qk_norm=True, qkv_bias=True, use_muon=True)),
    "sharded_lowrank_tied_nope": ("sharded", 3, dict(tie_word_embeddings=True, ttt_nope=True, use_muon=True)),
    "bin_prenorm_plain": ("bin", -1, dict(use_momentum=False, learnable_ttt_scale=False, ttt_prenorm=True)),
    "safetensors_no_v_silu": ("safetensors", -1, dict(no_v_silu=True)),  # the official HEAD's option
}


@pytest.mark.parametrize("case", list(CASES))
def test_official_layout_loads_with_identical_logits(tmp_path, case):
    fmt, rank, overrides = CASES[case]
    model = make_model(**overrides)
    factors = set_low_rank(model, rank) if rank > 0 else None
    path = write_checkpoint(tmp_path / "ckpt", official_config(model, rank), official_state_dict(model, factors), fmt)
    loaded = load_official_lact(str(path))
    assert type(loaded) is LaCTForCausalLM and loaded.config.model_type == "lact"
    assert loaded.config.w0_w2_low_rank == -1
    for name in OFFICIAL_FIELDS:
        assert getattr(loaded.config, name) == getattr(model.config, name), name
    tied = loaded.lm_head.weight is loaded.model.embeddings.weight
    assert tied == model.config.tie_word_embeddings
    input_ids = torch.randint(0, TINY["vocab_size"], (2, 13))  # 13 tokens: two full chunks of 5, then 3
    with torch.no_grad():
        expected, got = model(input_ids).logits, loaded(input_ids).logits
    assert torch.equal(got, expected)


def test_dtype_kept_or_cast(tmp_path):
    model = make_model()
    state = {key: value.to(torch.bfloat16) for key, value in official_state_dict(model).items()}
    path = write_checkpoint(tmp_path / "ckpt", official_config(model), state)
    assert {p.dtype for p in load_official_lact(path).parameters()} == {torch.bfloat16}
    cast = load_official_lact(path, dtype=torch.float32)
    assert {p.dtype for p in cast.parameters()} == {torch.float32}
    assert torch.equal(cast.model.layers[1].attn.w1, state["model.layers.1.attn.w1"].float())


def edit_missing(sd):
    del sd["model.layers.1.attn.qk_offset"]
    return "missing key model.layers.1.attn.qk_offset"


def edit_unexpected(sd):
    sd["model.layers.0.attn.rotary.cos_cached"] = torch.zeros(3)
    return "unexpected key model.layers.0.attn.rotary.cos_cached"


def edit_transposed(sd):
    sd["model.layers.0.attn.w1"] = sd["model.layers.0.attn.w1"].mT.contiguous()
    return "model.layers.0.attn.w1: shape (2, 32, 16), expected (2, 16, 32)"


def edit_half_factor(sd):
    del sd["model.layers.0.attn.w2.w_right"]
    return "missing key model.layers.0.attn.w2.w_right"


@pytest.mark.parametrize("edit", [edit_missing, edit_unexpected, edit_transposed, edit_half_factor])
def test_bad_state_dict_names_the_key(tmp_path, edit):
    model = make_model()
    rank = 3 if edit is edit_half_factor else -1
    factors = set_low_rank(model, rank) if rank > 0 else None
    sd = official_state_dict(model, factors)
    message = edit(sd)
    path = write_checkpoint(tmp_path / "ckpt", official_config(model, rank), sd)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_official_lact(path)


def test_low_rank_form_must_match_config():
    model = make_model()
    config = official_config_to_lact(official_config(model, rank=3))
    with pytest.raises(ValueError, match=re.escape("model.layers.0.attn.w0: full matrix, but w0_w2_low_rank=3")):
        official_state_dict_to_lact(official_state_dict(model), config, w0_w2_low_rank=3)
    factors = set_low_rank(model, 3)
    with pytest.raises(ValueError, match=re.escape("unexpected keys model.layers.0.attn.w0.w_left/.w_right")):
        official_state_dict_to_lact(official_state_dict(model, factors), config, w0_w2_low_rank=-1)


@pytest.mark.parametrize(
    "option",
    [
        {"lr_dim": 2},
        {"ttt_loss_type": "l2"},
        {"lr_parameterization": "linear"},
        {"hidden_act": "gelu"},
        {"window_size": None},
        {"model_type": "lact"},
    ],
)
def test_unsupported_config_option_names_the_field(tmp_path, option):
    model = make_model()
    ((field, value),) = option.items()
    with pytest.raises(ValueError, match=re.escape(f"{field}={value!r}")):
        official_config_to_lact(official_config(model, **option))
    if field == "lr_dim":  # the same error through the loader
        path = write_checkpoint(tmp_path / "ckpt", official_config(model, **option), official_state_dict(model))
        with pytest.raises(ValueError, match="lr_dim=2"):
            load_official_lact(path)


def test_authors_config_takes_official_defaults(caplog):
    with caplog.at_level(logging.WARNING, logger="refine.models.lact_convert"):
        config = official_config_to_lact(AUTHORS_760M_MUON)
    assert not caplog.records  # attention_bias and the fuse switches are known, ignored fields
    assert (config.hidden_size, config.num_lact_heads, config.rope_theta) == (1536, 4, 1000000)
    assert (config.max_position_embeddings, config.initializer_range, config.w0_w2_low_rank) == (32768, 0.02, -1)
    assert (config.ttt_nope, config.ttt_prenorm, config.no_v_silu) == (False, False, False)  # official defaults
    assert config.intermediate_size is None and config.use_muon and config.use_momentum
    with caplog.at_level(logging.WARNING, logger="refine.models.lact_convert"):
        official_config_to_lact({**AUTHORS_760M_MUON, "mystery_field": 1})
    assert "mystery_field" in caplog.text


def test_official_no_v_silu_config_loads_and_changes_the_output():
    """lact_llm/configs/760M_lact_swiglu_nh4_fwlow_rank_momentum_fused_kernel.json (official HEAD 1f84d47)
    differs from the muon config in use_muon=false, no_v_silu=true, use_fused_kernel=true, fp32_states=true."""
    fused = {**AUTHORS_760M_MUON, "use_muon": False, "no_v_silu": True, "use_fused_kernel": True, "fp32_states": True}
    config = official_config_to_lact(fused)
    assert config.no_v_silu and config.qkv_silu and not config.use_muon
    model = make_model(no_v_silu=True)
    input_ids = torch.randint(0, TINY["vocab_size"], (1, 11))
    with torch.no_grad():
        with_silu = LaCTForCausalLM(LaCTConfig(**{**TINY, "no_v_silu": False})).eval()
        with_silu.load_state_dict(model.state_dict())
        assert not torch.allclose(model(input_ids).logits, with_silu(input_ids).logits)
