"""Model names → builders and loaders, for the tiny defaults and the paper's checkpoints.

A model entry of the config (`models.<name>`) says which architecture (`arch`), the config
overrides of the tiny model built from scratch (`config`), or a pretrained checkpoint
(`pretrained`: a Hugging Face hub name or a local directory in the same format). Loading is
one code path for both: `transformers.AutoModelForCausalLM.from_pretrained`.

The kernel backend for fla is chosen here, explicitly, from the device the model goes to
(`refine.models.backend.activate`), never per call.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from refine.models import backend

log = logging.getLogger(__name__)

ARCHS = ("delta_net", "gated_deltanet", "lact")


def _register_architectures() -> None:
    import fla.models  # noqa: F401  (registers DeltaNet / GatedDeltaNet with the Auto classes)

    import refine.models.lact  # noqa: F401  (registers LaCT)


def build_model(arch: str, vocab_size: int, overrides: dict | None = None, device: str = "cpu"):
    """A freshly initialised tiny model of architecture `arch`."""
    if arch not in ARCHS:
        raise ValueError(f"models.*.arch: expected one of {ARCHS}, got {arch!r}")
    backend.activate(device)
    _register_architectures()
    overrides = dict(overrides or {})
    if arch == "lact":
        from refine.models.lact import LACT_TINY, LaCTConfig, LaCTForCausalLM

        config = LaCTConfig(**{**LACT_TINY, **overrides, "vocab_size": vocab_size})
        model = LaCTForCausalLM(config)
    else:
        from refine.models.fla_models import build_fla_model

        model = build_fla_model(arch, vocab_size=vocab_size, **overrides)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("built %s with %.2fM parameters", arch, n_params / 1e6)
    return model.to(device)


def load_model(path_or_name: str | Path, device: str = "cpu", dtype: torch.dtype | None = None):
    """Load a causal LM from a local directory or a hub name (same code path)."""
    from transformers import AutoModelForCausalLM

    backend.activate(device)
    _register_architectures()
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForCausalLM.from_pretrained(str(path_or_name), **kwargs)
    return model.to(device)
