"""Load the authors' LaCT checkpoints (a1600012888/LaCT lact_llm, "lact_swiglu") into LaCTForCausalLM.

Official layout (read from lact_llm/lact_model at commit 1f84d47): config.json holds the fields of
`LaCTSWIGLUConfig.__init__` (missing fields take that constructor's defaults, listed in OFFICIAL_DEFAULTS;
the authors' example configs omit e.g. ttt_nope and ttt_prenorm). The state dict uses the same parameter
names and shapes as refine/models/lact.py (its docstring lists them): fused qkv [3*hidden, hidden] split
q|k|v; w0, w2 [Hf, d_h, Df] and w1 [Hf, Df, d_h] (out, in); lr_proj [3*Hf, hidden] with rows (head, 3);
qk_scale/qk_offset [hidden, 2]; fla's RMSNorm and GatedMLP keep the `weight` / gate|up|down_proj names of
the torch modules. So the mapping is the identity on names, except:
- w0_w2_low_rank > 0: the official w0 and w2 are `LowRankFastWeight` modules with parameters
  `attn.w0.w_left` [Hf, d_h, r] and `attn.w0.w_right` [Hf, r, Df]; the official forward uses
  W = w_left @ w_right + 0.5 * I (add_identity=True for both). The mapping materialises W (in float32, then
  cast to the stored dtype) and the converted config says w0_w2_low_rank=-1.
- tie_word_embeddings: a checkpoint may omit lm_head.weight; it is filled from model.embeddings.weight.
- `attn.rotary.inv_freq` (a RoPE buffer derived from rope_theta; not saved by fla 0.6) is dropped if present.

Loading from a hub name runs `huggingface_hub.snapshot_download`, then the same code as a local directory.
Weights: model.safetensors(.index.json shards), else pytorch_model.bin(.index.json shards).

Writing the layout (`lact_to_official_state_dict`, `official_config_from_lact`, `write_official_checkpoint`): our
model under the official names and config fields, key by key from the authors' module tree (not by inverting the
mapping above); the checkpoint tests and the rehearsal's tiny checkpoints (`refine.rehearsal`) share it.

Deviations and limits, with reasons:
- Low-rank initial weights become full matrices: the forward is exact (the official code builds the same W
  on every forward), but training then updates a full-rank initial W instead of the factors, and the
  model cannot be saved back in the low-rank layout.
- no_v_silu (official HEAD 1f84d47; e.g. lact_llm/configs/760M_lact_swiglu_nh4_fwlow_rank_momentum_fused_
  kernel.json sets it) maps to LaCTConfig.no_v_silu, which LaCTLayer implements as the official layer does.
- Rejected (ValueError naming the field): window_size=None (full attention) and rope_theta=None; everything
  LaCTConfig rejects (lr_dim != 1, lr_parameterization != "mamba", ttt_loss_type != "dot_product",
  hidden_act != "swish"); a model_type other than "lact_swiglu".
- Ignored fields (kernel, precision or unread switches; the math is the same): IGNORED_FIELDS.
- Unknown fields are logged and dropped, not rejected: the official model reads only its constructor
  fields, so an unknown field cannot change what the official model computes.
- dtype=None keeps the checkpoint's dtype (HF's dtype="auto"), not from_pretrained's float32 default.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import torch

from refine.models.lact import LaCTConfig, LaCTForCausalLM

logger = logging.getLogger(__name__)

OFFICIAL_MODEL_TYPE = "lact_swiglu"
OFFICIAL_DEFAULTS = {  # LaCTSWIGLUConfig.__init__ defaults (configuration_lact_swiglu.py)
    "hidden_size": 2048,
    "num_hidden_layers": 24,
    "num_attn_heads": 32,
    "num_lact_heads": 4,
    "inter_multi": 1,
    "qkv_bias": False,
    "attn_qk_norm": False,
    "lact_chunk_size": 2048,
    "use_muon": False,
    "lr_dim": 1,
    "qkv_silu": True,
    "no_v_silu": False,
    "lr_parameterization": "mamba",
    "learnable_ttt_scale": True,
    "use_momentum": True,
    "ttt_loss_type": "dot_product",
    "ttt_prenorm": False,
    "ttt_nope": False,
    "w0_w2_low_rank": -1,
    "window_size": 2048,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
    "hidden_ratio": 4,
    "intermediate_size": None,
    "hidden_act": "swish",
    "initializer_range": 0.006,
    "elementwise_affine": True,
    "norm_eps": 1e-6,
    "use_cache": True,
    "pad_token_id": None,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "fuse_norm": True,
    "last_layer_fuse_norm": True,
    "fuse_swiglu": True,
    "fuse_cross_entropy": True,
    "vocab_size": 32000,
    "fw_init_gain": 0.5,
    "use_fused_kernel": False,
    "fp32_states": False,
}
IGNORED_FIELDS = {
    "fuse_norm": "fused add+RMSNorm kernel, same math",
    "last_layer_fuse_norm": "fused final RMSNorm kernel, same math",
    "fuse_swiglu": "fused SwiGLU kernel, same math",
    "fuse_cross_entropy": "fused loss kernel, training only",
    "use_fused_kernel": "Triton fast-weight kernel, same math",
    "fp32_states": "fast-weight precision on GPU",
    "elementwise_affine": "stored but never read: the official norms are always affine",
    "use_cache": "the official LaCTForCausalLM forces use_cache=False",
    "attention_bias": "in the authors' example configs, never read",
}
HF_BOOKKEEPING = {  # written by transformers, never read by the official model
    *("model_type", "architectures", "auto_map", "transformers_version", "torch_dtype", "dtype", "_name_or_path")
}
LOW_RANK_IDENTITY = 0.5  # LowRankFastWeight(add_identity=True): W = w_left @ w_right + 0.5 * I
LOW_RANK_KEY = re.compile(r"(model\.layers\.\d+\.attn\.w[02])\.(w_left|w_right)")
FAST_WEIGHT_KEY = re.compile(r"model\.layers\.\d+\.attn\.w[02]")
ROTARY_BUFFER = re.compile(r"model\.layers\.\d+\.attn\.rotary\.inv_freq")


def official_config_to_lact(official: dict) -> LaCTConfig:
    """The official config.json contents -> LaCTConfig (model_type "lact"), official defaults filled in."""
    model_type = official.get("model_type", OFFICIAL_MODEL_TYPE)
    if model_type != OFFICIAL_MODEL_TYPE:
        raise ValueError(f"model_type={model_type!r}: expected {OFFICIAL_MODEL_TYPE!r} (official LaCT)")
    fields = {**OFFICIAL_DEFAULTS, **{k: v for k, v in official.items() if k in OFFICIAL_DEFAULTS}}
    unknown = sorted(set(official) - set(OFFICIAL_DEFAULTS) - set(IGNORED_FIELDS) - HF_BOOKKEEPING)
    if unknown:
        logger.warning("official LaCT config: dropping fields the official model never reads: %s", unknown)
    for name in ("window_size", "rope_theta"):
        if fields[name] is None:
            raise ValueError(f"unsupported official setting {name}=None")
    kwargs = {k: v for k, v in fields.items() if k not in IGNORED_FIELDS}
    kwargs["w0_w2_low_rank"] = -1  # low-rank initial weights are materialised by the state-dict mapping
    try:
        return LaCTConfig(**kwargs)
    except ValueError as err:  # LaCTConfig names the field and value
        raise ValueError(f"official LaCT config: {err}") from err


def expected_shapes(config: LaCTConfig) -> dict[str, torch.Size]:
    """Parameter name -> shape of LaCTForCausalLM(config), from a meta-device model (no memory, no init)."""
    with torch.device("meta"):
        model = LaCTForCausalLM(config)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def materialise_low_rank(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Official LowRankFastWeight: left [Hf, out, r] @ right [Hf, r, in] + 0.5 * I -> [Hf, out, in]."""
    product = left.float() @ right.float()
    eye = torch.eye(product.shape[-2], product.shape[-1], device=product.device)
    return (product + LOW_RANK_IDENTITY * eye).to(left.dtype)


def official_state_dict_to_lact(
    state_dict: dict[str, torch.Tensor], config: LaCTConfig, w0_w2_low_rank: int | None = None
) -> dict[str, torch.Tensor]:
    """Official LaCT state dict -> LaCTForCausalLM state dict (pure: no I/O, inputs untouched).

    w0_w2_low_rank: the official config's value; > 0 requires factors of that rank for every w0/w2, <= 0
    requires full matrices, None accepts either. Raises ValueError naming every missing, unexpected or
    mis-shaped key."""
    if config.w0_w2_low_rank > 0:
        raise ValueError(f"config.w0_w2_low_rank={config.w0_w2_low_rank}: use official_config_to_lact()")
    out, factors = {}, {}
    for key, value in state_dict.items():
        if ROTARY_BUFFER.fullmatch(key):
            continue
        match = LOW_RANK_KEY.fullmatch(key)
        if match:
            factors.setdefault(match[1], {})[match[2]] = value
        else:
            out[key] = value
    errors, rank = [], w0_w2_low_rank
    for name, pair in sorted(factors.items()):
        wrong = [f"missing key {name}.{part}" for part in ("w_left", "w_right") if part not in pair]
        if rank is not None and rank <= 0:
            wrong.append(f"unexpected keys {name}.w_left/.w_right: w0_w2_low_rank={rank}")
        if name in out:
            wrong.append(f"both {name} and its low-rank factors {name}.w_left/.w_right")
        if not wrong:
            left, right = pair["w_left"], pair["w_right"]
            if left.dim() != 3 or right.dim() != 3 or left.shape[-1] != right.shape[-2]:
                got = f"{tuple(left.shape)}, {tuple(right.shape)}"
                wrong.append(f"{name}.w_left/.w_right shapes {got} do not chain")
            elif rank is not None and left.shape[-1] != rank:
                wrong.append(f"{name}.w_left shape {tuple(left.shape)}: rank != w0_w2_low_rank={rank}")
            else:
                out[name] = materialise_low_rank(left, right)
        errors += wrong
    if rank is not None and rank > 0:
        full = [key for key in out if FAST_WEIGHT_KEY.fullmatch(key) and key not in factors]
        errors += [f"{key}: full matrix, but w0_w2_low_rank={rank} expects .w_left/.w_right" for key in full]
    if config.tie_word_embeddings and "model.embeddings.weight" in out:
        embeddings = out["model.embeddings.weight"]
        head = out.setdefault("lm_head.weight", embeddings)
        if head is not embeddings and not torch.equal(head, embeddings):
            errors.append("lm_head.weight differs from model.embeddings.weight but tie_word_embeddings=True")
    shapes = expected_shapes(config)
    errors += [f"missing key {key}" for key in sorted(set(shapes) - set(out))]
    errors += [f"unexpected key {key}" for key in sorted(set(out) - set(shapes))]
    errors += [
        f"{key}: shape {tuple(out[key].shape)}, expected {tuple(shape)}"
        for key, shape in shapes.items()
        if key in out and out[key].shape != shape
    ]
    if errors:
        raise ValueError("official LaCT state dict does not match the config:\n  " + "\n  ".join(errors))
    return out


def read_shards(directory: Path, index_name: str, load) -> dict[str, torch.Tensor]:
    """Weights listed by an HF index file (weight_map: key -> shard file), checked against the shards."""
    weight_map = json.loads((directory / index_name).read_text())["weight_map"]
    state_dict = {}
    for shard in sorted(set(weight_map.values())):
        part = load(directory / shard)
        twice = sorted(set(part) & set(state_dict))
        if twice:
            raise ValueError(f"{shard}: keys already read from another shard: {twice}")
        state_dict.update(part)
    if set(state_dict) != set(weight_map):
        index_only = sorted(set(weight_map) - set(state_dict))
        shard_only = sorted(set(state_dict) - set(weight_map))
        raise ValueError(f"{index_name} vs its shards: only in the index {index_only}, only in shards {shard_only}")
    return state_dict


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path, device="cpu")


def load_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_official_checkpoint(directory: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json contents, state dict) of a local checkpoint directory, on the CPU."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    for name, load in (("model.safetensors", load_safetensors), ("pytorch_model.bin", load_torch_bin)):
        if (directory / f"{name}.index.json").is_file():
            return config, read_shards(directory, f"{name}.index.json", load)
        if (directory / name).is_file():
            return config, load(directory / name)
    raise FileNotFoundError(
        f"{directory}: no model.safetensors, pytorch_model.bin or their .index.json (sharded) files"
    )


def load_official_lact(
    path_or_name: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> LaCTForCausalLM:
    """An official LaCT checkpoint (local directory or hub name) as LaCTForCausalLM in eval mode.

    dtype None keeps the checkpoint's dtype (that of model.embeddings.weight)."""
    directory = Path(path_or_name)
    if not directory.is_dir():
        from huggingface_hub import snapshot_download

        patterns = ["config.json", "*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin*"]
        directory = Path(snapshot_download(repo_id=str(path_or_name), allow_patterns=patterns))
    official, official_state = read_official_checkpoint(directory)
    config = official_config_to_lact(official)
    rank = official.get("w0_w2_low_rank", OFFICIAL_DEFAULTS["w0_w2_low_rank"])
    state_dict = official_state_dict_to_lact(official_state, config, w0_w2_low_rank=rank)
    dtype = dtype or state_dict["model.embeddings.weight"].dtype
    with torch.device("meta"):
        model = LaCTForCausalLM(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()  # assign=True replaces the shared tensor; re-tie when tie_word_embeddings
    model = model.to(device=device, dtype=dtype).eval()
    stored = Counter(str(t.dtype).removeprefix("torch.") for t in official_state.values())
    logger.info(
        "loaded official LaCT from %s: %d layers, hidden %d, %d lact heads, %.1fM parameters, stored %s, "
        "now %s on %s%s",
        path_or_name,
        config.num_hidden_layers,
        config.hidden_size,
        config.num_lact_heads,
        sum(p.numel() for p in model.parameters()) / 1e6,
        dict(stored),
        dtype,
        device,
        f"; low-rank w0/w2 (rank {rank}) materialised" if rank > 0 else "",
    )
    return model


# --- writing the official layout (tests and the rehearsal's checkpoints) ------------------------------

OFFICIAL_CONFIG_FIELDS = tuple(k for k in OFFICIAL_DEFAULTS if k not in IGNORED_FIELDS and k != "w0_w2_low_rank")
OFFICIAL_SWITCHES = {"fuse_norm": True, "fuse_swiglu": True, "use_fused_kernel": False, "fp32_states": True,
                     "use_cache": True}  # fmt: skip


def lact_to_official_state_dict(
    model: LaCTForCausalLM, factors: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """`model`'s weights under the official names, written key by key from the authors' module tree
    (LaCTForCausalLM / LaCTModel / LaCTBlock / LaCTSWIGLULayer / fla GatedMLP attribute names), not
    through `official_state_dict_to_lact`; low-rank w0/w2 as `factors` (official key -> tensor) when given."""
    cfg, inner = model.config, model.model
    sd = {"model.embeddings.weight": inner.embeddings.weight, "model.norm.weight": inner.norm.weight}
    if not cfg.tie_word_embeddings:
        sd["lm_head.weight"] = model.lm_head.weight
    for i, block in enumerate(inner.layers):
        p, attn = f"model.layers.{i}.", block.attn
        sd[p + "attn_norm.weight"] = block.attn_norm.weight
        sd[p + "mlp_norm.weight"] = block.mlp_norm.weight
        sd[p + "attn.qkv.weight"] = attn.qkv.weight
        if cfg.qkv_bias:
            sd[p + "attn.qkv.bias"] = attn.qkv.bias
        if cfg.attn_qk_norm:
            sd[p + "attn.q_norm.weight"] = attn.q_norm.weight
            sd[p + "attn.k_norm.weight"] = attn.k_norm.weight
        sd[p + "attn.o_proj.weight"] = attn.o_proj.weight
        if factors is None:
            sd[p + "attn.w0"], sd[p + "attn.w2"] = attn.w0, attn.w2
        sd[p + "attn.w1"] = attn.w1
        sd[p + "attn.lr_proj.weight"], sd[p + "attn.lr_proj.bias"] = attn.lr_proj.weight, attn.lr_proj.bias
        sd[p + "attn.qk_scale"], sd[p + "attn.qk_offset"] = attn.qk_scale, attn.qk_offset
        if cfg.learnable_ttt_scale:
            sd[p + "attn.ttt_scale_proj.weight"] = attn.ttt_scale_proj.weight
            sd[p + "attn.ttt_scale_proj.bias"] = attn.ttt_scale_proj.bias
        sd[p + "attn.ttt_norm.weight"] = attn.ttt_norm.weight
        if cfg.use_momentum:
            sd[p + "attn.momentum_proj.0.weight"] = attn.momentum_proj[0].weight
            sd[p + "attn.momentum_proj.0.bias"] = attn.momentum_proj[0].bias
        for name in ("gate_proj", "up_proj", "down_proj"):
            sd[p + f"mlp.{name}.weight"] = getattr(block.mlp, name).weight
    sd.update(factors or {})
    return {key: value.detach().clone().contiguous() for key, value in sd.items()}


def official_config_from_lact(model: LaCTForCausalLM, rank: int = -1, **overrides) -> dict:
    """The official config.json contents (model_type lact_swiglu) describing `model`; `rank`: w0_w2_low_rank."""
    fields = {name: getattr(model.config, name) for name in OFFICIAL_CONFIG_FIELDS}
    return {"model_type": OFFICIAL_MODEL_TYPE, "architectures": ["LaCTForCausalLM"], **fields,
            **OFFICIAL_SWITCHES, "w0_w2_low_rank": rank, **overrides}  # fmt: skip


def write_official_checkpoint(
    directory: str | Path, config: dict, state_dict: dict[str, torch.Tensor], fmt: str = "safetensors"
) -> Path:
    """Write config.json and the weights: `fmt` "safetensors" (model.safetensors), "bin"
    (pytorch_model.bin) or "sharded" (two safetensors shards and their index, as save_pretrained writes)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if fmt == "safetensors":
        save_file(state_dict, directory / "model.safetensors", metadata={"format": "pt"})
    elif fmt == "bin":
        torch.save(state_dict, directory / "pytorch_model.bin")
    elif fmt == "sharded":
        keys = sorted(state_dict)
        shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
        for shard, names in shards.items():
            save_file({key: state_dict[key] for key in names}, directory / shard, metadata={"format": "pt"})
        weight_map = {key: shard for shard, names in shards.items() for key in names}
        total = sum(t.numel() * t.element_size() for t in state_dict.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    else:
        raise ValueError(f"write_official_checkpoint: fmt must be safetensors, bin or sharded, got {fmt!r}")
    return directory
