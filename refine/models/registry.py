"""Model names → builders and loaders, for the tiny defaults and the paper's checkpoints.

A model entry of the config (`models.<name>`) says which architecture (`arch`), the config
overrides of the tiny model built from scratch (`config`), or a pretrained checkpoint
(`pretrained`: a Hugging Face hub name or a local directory in the same format). Loading is
one code path for both: `transformers.AutoModelForCausalLM.from_pretrained`.

The kernel backend for fla is chosen here, explicitly, from the device the model goes to
(`refine.models.backend.activate`), never per call.

Dtypes. `load_model` returns fp32 weights by default, whatever the checkpoint stores (the hub's
DeltaNet-1.3B is bf16): training keeps fp32 master weights and computes in bf16 only inside
autocast (on CUDA), as the authors' actor does, and `refine.train.optim.build_optimizer` refuses
anything else. Evaluation loads the same way (fp32; a bf16 checkpoint upcasts exactly), so a
checkpoint decodes with the same numerics with and without test-time training, which adapts the
loaded weights in place. `dtype=None` keeps the checkpoint's dtype (the `pretrain` import of a
hub checkpoint copies it as stored). `save_model(model, path, dtype)` writes a checkpoint in the
dtype the run asks for (`train.save_dtype`, default float32) without touching the model's own
weights; config.json records that dtype.

`build_model(..., tokenizer=...)` copies the tokenizer's BOS/EOS/PAD ids into the model config,
so `config.eos_token_id` (which REFINE's rollouts mask, and generation stops on) is the study's
EOS, not the architecture's default.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from refine.models import backend
from refine.names import ARCHITECTURES

log = logging.getLogger(__name__)

ARCHS = ARCHITECTURES  # refine.names


def _register_architectures() -> None:
    import fla.models  # noqa: F401  (registers DeltaNet / GatedDeltaNet with the Auto classes)

    import refine.models.lact  # noqa: F401  (registers LaCT)


SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def special_token_ids(tokenizer) -> dict[str, int]:
    """{bos,eos,pad}_token_id of a tokenizer, the ones it defines."""
    names = ("bos_token_id", "eos_token_id", "pad_token_id")
    return {name: int(getattr(tokenizer, name)) for name in names if getattr(tokenizer, name, None) is not None}


def build_model(arch: str, vocab_size: int, overrides: dict | None = None, device: str = "cpu", tokenizer=None):
    """A freshly initialised tiny model of architecture `arch`; with `tokenizer`, its special token
    ids go into the config (explicit `overrides` win)."""
    if arch not in ARCHS:
        raise ValueError(f"models.*.arch: expected one of {ARCHS}, got {arch!r}")
    backend.activate(device)
    _register_architectures()
    overrides = {**(special_token_ids(tokenizer) if tokenizer is not None else {}), **dict(overrides or {})}
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


def load_model(path_or_name: str | Path, device: str = "cpu", dtype: torch.dtype | None = torch.float32):
    """Load a causal LM from a local directory or a hub name (same code path), in `dtype`
    (default fp32 master weights; None: the checkpoint's own dtype)."""
    from transformers import AutoModelForCausalLM

    backend.activate(device)
    _register_architectures()
    model = AutoModelForCausalLM.from_pretrained(str(path_or_name), dtype=dtype if dtype is not None else "auto")
    if dtype is not None:
        model = model.to(dtype)  # also buffers and any module the loader kept in another dtype
    log.info("loaded %s as %s", path_or_name, next(model.parameters()).dtype)
    return model.to(device)


def save_dtype(name: str) -> torch.dtype:
    """The torch dtype of a `train.save_dtype` name."""
    if name not in SAVE_DTYPES:
        raise ValueError(f"save dtype must be one of {sorted(SAVE_DTYPES)}, got {name!r}")
    return SAVE_DTYPES[name]


def save_model(model, path: str | Path, dtype: str | torch.dtype = "float32", state_dict: dict | None = None) -> None:
    """`model.save_pretrained(path)` with its floating-point tensors (of `state_dict`, default the
    model's own) cast to `dtype`; the model itself is left as it is. config.json names `dtype`."""
    import json

    dtype = save_dtype(dtype) if isinstance(dtype, str) else dtype
    state = model.state_dict() if state_dict is None else state_dict
    cast: dict[int, torch.Tensor] = {}  # one copy per storage, so tied weights stay tied
    state = {
        k: cast.setdefault(v.data_ptr(), v.to(dtype)) if torch.is_floating_point(v) else v for k, v in state.items()
    }
    model.save_pretrained(str(path), state_dict=state)
    config_path = Path(path) / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = str(dtype).removeprefix("torch.")
    config.pop("torch_dtype", None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
