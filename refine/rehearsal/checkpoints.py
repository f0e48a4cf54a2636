"""Tiny checkpoints in the hub layouts the paper config imports: fla-hub DeltaNet and the official LaCT release.

`write_delta_net_hub` writes what `fla-hub/delta_net-1.3B-100B` holds: `config.json` with exactly the
fields of the hub file (revision 1a918d7, as uploaded by fla's `save_pretrained` with transformers
4.45.2: `model_type: delta_net`, `architectures: [DeltaNetForCausalLM]`, `torch_dtype: bfloat16`,
bos/eos/pad ids 1/2/2, no fuse_norm/fuse_swiglu fields, so fla's defaults apply), `generation_config.json`
(that of revision b4dcbba), bf16 weights in one `model.safetensors` (`metadata: {format: pt}`, fla's
parameter names), and the tokenizer files the hub repo carries (the paper's `tokenizer.path` is this
repo). Only the sizes differ from the hub: hidden 64, 2 layers, 2 heads, the rehearsal tokenizer's
vocabulary, `max_position_embeddings` unchanged (fla's DeltaNet does not read it).

`write_lact_official` writes the layout `refine.models.lact_convert.load_official_lact` reads from
`YunjinZhang/lact_llm` (config.json of `LaCTSWIGLUConfig` fields with `model_type: lact_swiglu`, one
`model.safetensors` under the official parameter names), through lact_convert's own writer; bf16
weights; the settings of the authors' 760M checkpoint (Muon, momentum, no RoPE in the fast-weight
branch, post-norm) at hidden 64, 2 layers, 2 attention and 2 fast-weight heads, window and chunk 128.

Weights are random (seeded): these are rehearsal checkpoints, not trained models. Deviation: the hub
repo's `tokenizer.model` (the SentencePiece file) is not written; nothing in the project reads it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from refine.rehearsal.tokenizer import TOKENIZER_FILES

logger = logging.getLogger(__name__)

# fla-hub/delta_net-1.3B-100B config.json (revision 1a918d7), every field; sizes are overridden below.
DELTA_NET_HUB_CONFIG = {
    "_name_or_path": "fla-hub/delta_net-1.3B-100B",
    "architectures": ["DeltaNetForCausalLM"],
    "attn": None,
    "attn_mode": "chunk",
    "bos_token_id": 1,
    "conv_size": 4,
    "eos_token_id": 2,
    "expand_k": 1,
    "expand_v": 1,
    "fuse_cross_entropy": True,
    "hidden_act": "swish",
    "hidden_ratio": 4,
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": None,
    "max_position_embeddings": 2048,
    "model_type": "delta_net",
    "norm_eps": 1e-06,
    "norm_first": False,
    "num_heads": 16,
    "num_hidden_layers": 24,
    "pad_token_id": 2,
    "qk_activation": "silu",
    "qk_norm": "l2",
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.45.2",
    "use_beta": True,
    "use_cache": True,
    "use_gate": False,
    "use_output_norm": True,
    "use_short_conv": True,
    "vocab_size": 32000,
}
# fla-hub/delta_net-1.3B-100B generation_config.json (revision b4dcbba).
DELTA_NET_HUB_GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "transformers_version": "4.48.2",
}
DELTA_NET_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_heads": 2}
LACT_TINY_OFFICIAL = {  # LACT_760M's switches (refine.models.lact) at rehearsal size
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attn_heads": 2,
    "num_lact_heads": 2,
    "inter_multi": 1.0,
    "window_size": 128,
    "lact_chunk_size": 128,
    "use_muon": True,
    "ttt_nope": True,
    "ttt_prenorm": False,
    "use_momentum": True,
    "hidden_ratio": 4,
    "rope_theta": 10000.0,
    "max_position_embeddings": 2048,
}


def _json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _copy_tokenizer(tokenizer_dir: Path, out: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, out / name)


def write_delta_net_hub(out_dir: str | Path, tokenizer_dir: str | Path, vocab_size: int, seed: int) -> Path:
    """A tiny DeltaNet in the fla-hub layout (see the module doc), random weights from `seed`."""
    from safetensors.torch import save_file

    from refine.models.backend import activate
    from refine.models.fla_models import MODEL_CLASSES

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {**DELTA_NET_HUB_CONFIG, **DELTA_NET_TINY, "vocab_size": vocab_size}
    activate("cpu")
    config_class, model_class = MODEL_CLASSES["delta_net"]
    fields = {k: v for k, v in config.items() if k not in ("_name_or_path", "architectures", "model_type",
                                                           "torch_dtype", "transformers_version")}  # fmt: skip
    torch.manual_seed(seed)
    model = model_class(config_class(**fields))
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    _json(out / "config.json", config)
    _json(out / "generation_config.json", DELTA_NET_HUB_GENERATION_CONFIG)
    _copy_tokenizer(Path(tokenizer_dir), out)
    n_params = sum(v.numel() for v in state.values())
    logger.info("delta_net (fla-hub layout): %.2fM parameters, bf16 -> %s", n_params / 1e6, out)
    return out


def write_lact_official(out_dir: str | Path, vocab_size: int, seed: int) -> Path:
    """A tiny LaCT in the official release layout (see the module doc), random weights from `seed`."""
    from refine.models.lact import LaCTConfig, LaCTForCausalLM
    from refine.models.lact_convert import (
        lact_to_official_state_dict,
        official_config_from_lact,
        write_official_checkpoint,
    )

    torch.manual_seed(seed)
    model = LaCTForCausalLM(LaCTConfig(**LACT_TINY_OFFICIAL, vocab_size=vocab_size))
    state = {k: v.to(torch.bfloat16) for k, v in lact_to_official_state_dict(model).items()}
    out = write_official_checkpoint(out_dir, official_config_from_lact(model, torch_dtype="bfloat16"), state)
    logger.info("lact (official layout): %.2fM parameters, bf16 -> %s", sum(v.numel() for v in state.values()) / 1e6,
                out)  # fmt: skip
    return out
