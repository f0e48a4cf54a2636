"""Build flash-linear-attention's DeltaNet and Gated DeltaNet causal LMs with CPU-friendly settings.

`build_fla_model(kind, vocab_size, **overrides)` returns fla's own `DeltaNetForCausalLM` or
`GatedDeltaNetForCausalLM` (so checkpoints, `Cache` objects and `generate` are fla's), sized by
`TINY_CONFIGS[kind]` unless overridden. The fused norm, SwiGLU and cross-entropy options are off
by default (`CPU_SETTINGS`): those blocks then run as plain torch modules on any device, and the
saved config loads the same way on a GPU. The recurrent and convolution kernels still need
`refine.models.backend.activate(device)` before the first forward on a CPU.

Saved models load back with `transformers.AutoModelForCausalLM.from_pretrained(local_dir)`:
importing `fla.models` (done here) registers fla's configs with the Auto classes.
"""

from __future__ import annotations

import fla.models
from transformers import PreTrainedModel

MODEL_CLASSES = {
    "delta_net": (fla.models.DeltaNetConfig, fla.models.DeltaNetForCausalLM),
    "gated_deltanet": (fla.models.GatedDeltaNetConfig, fla.models.GatedDeltaNetForCausalLM),
}

CPU_SETTINGS = {
    "fuse_norm": False,
    "fuse_swiglu": False,
    "fuse_cross_entropy": False,
    "fuse_linear_cross_entropy": False,
}

TINY_CONFIGS = {
    "delta_net": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_heads": 2,
        "conv_size": 4,
    },
    "gated_deltanet": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_heads": 2,
        "head_dim": 64,
        "expand_v": 1.0,
        "conv_size": 4,
    },
}


def build_fla_model(kind: str, vocab_size: int, **config_overrides) -> PreTrainedModel:
    """fla causal LM of `kind` ("delta_net" or "gated_deltanet"), TINY_CONFIGS[kind] and CPU_SETTINGS
    updated with `config_overrides` (any field of fla's config class), randomly initialised."""
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_CLASSES)}.")
    if config_overrides.get("attnres_block_size") is not None:
        raise ValueError("attention residuals (attnres_block_size) have no torch backend.")
    if config_overrides.get("hidden_act", "swish") != "swish":
        raise ValueError(f"hidden_act {config_overrides['hidden_act']!r} has no torch backend; use 'swish'.")
    config_class, model_class = MODEL_CLASSES[kind]
    settings = {**TINY_CONFIGS[kind], **CPU_SETTINGS, **config_overrides, "vocab_size": vocab_size}
    return model_class(config_class(**settings))
