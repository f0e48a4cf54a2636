"""Choose how flash-linear-attention (fla) 0.6.0 computes: its Triton kernels or this project's torch ops.

fla's kernels are Triton-only, so fla's own models (DeltaNetForCausalLM,
GatedDeltaNetForCausalLM) fail on a CPU at the first short convolution. `activate(device)`
selects the backend once, explicitly, by device: "triton" on CUDA (fla untouched, or restored
if the torch backend was active before) and "torch" on CPU, where the names that fla's layers
and modules look up at call time are pointed at the pure-PyTorch ops of `refine.models.ops`:

    fla.layers.delta_net.chunk_delta_rule                 -> ops.delta_rule.chunk_delta_rule
    fla.layers.delta_net.fused_recurrent_delta_rule       -> ops.delta_rule.short_input_delta_rule
    fla.layers.delta_net.elu_p1                           -> ops.norm.elu_p1
    fla.layers.gated_deltanet.chunk_gated_delta_rule      -> ops.gated_delta_rule.chunk_gated_delta_rule
    fla.layers.gated_deltanet.fused_recurrent_gated_delta_rule
                                                          -> ops.gated_delta_rule.recurrent_gated_delta_rule
    fla.layers.gated_deltanet.causal_conv1d               -> ops.conv.causal_conv1d
    fla.modules.causal_conv1d.ops.ShortConvolution.forward -> ops.conv.short_convolution_forward
    fla.modules.norm.layernorm.rms_norm                   -> ops.norm.rms_norm (RMSNorm.forward)
    fla.modules.norm.fused_norm_gate.rms_norm_gated       -> ops.norm.rms_norm_gated (FusedRMSNormGated)
    fla.modules.mlp.swiglu, fla.modules.mlp.swiglu_linear -> ops.norm.swiglu, ops.norm.swiglu_linear
    fla.models.modeling_utils.FusedCrossEntropyLoss       -> ops.loss.CrossEntropyLoss
    fla.models.modeling_utils.FusedLinearCrossEntropyLoss -> ops.loss.LinearCrossEntropyLoss

The backend is a process-wide choice: it never changes per call, and `active_backend()` tells
which one is in force. fla's layers themselves still pick their recurrent entry point for
short inputs (q_len <= 64, and for Gated DeltaNet only without grad); on the torch backend the
chunked and recurrent ops agree to rounding (tested), so that choice does not change results
beyond float32 rounding. Cost of that choice on a CPU: the DeltaNet layer sends inputs of <= 64
tokens to the recurrent token loop even when training (fwd+bwd ~4x slower than the chunked op at
B=32, T=32); decoding single tokens through it is ~6x cheaper than through the chunked op.

Not covered (they stay Triton and fail on a CPU): attention-residual models
(`attnres_block_size`), the `powlu` MLP activation, fla layers other than DeltaNet and Gated
DeltaNet.
"""

from __future__ import annotations

import importlib
import logging

import fla
import torch

from refine.models.ops import conv, delta_rule, gated_delta_rule, loss, norm

logger = logging.getLogger(__name__)

TESTED_FLA_VERSION = "0.6.0"

# (module, attribute path inside it, torch replacement)
TORCH_PATCHES: tuple[tuple[str, str, object], ...] = (
    ("fla.layers.delta_net", "chunk_delta_rule", delta_rule.chunk_delta_rule),
    ("fla.layers.delta_net", "fused_recurrent_delta_rule", delta_rule.short_input_delta_rule),
    ("fla.layers.delta_net", "elu_p1", norm.elu_p1),
    ("fla.layers.gated_deltanet", "chunk_gated_delta_rule", gated_delta_rule.chunk_gated_delta_rule),
    (
        "fla.layers.gated_deltanet",
        "fused_recurrent_gated_delta_rule",
        gated_delta_rule.recurrent_gated_delta_rule,
    ),
    ("fla.layers.gated_deltanet", "causal_conv1d", conv.causal_conv1d),
    ("fla.modules.causal_conv1d.ops", "ShortConvolution.forward", conv.short_convolution_forward),
    ("fla.modules.norm.layernorm", "rms_norm", norm.rms_norm),
    ("fla.modules.norm.fused_norm_gate", "rms_norm_gated", norm.rms_norm_gated),
    ("fla.modules.mlp", "swiglu", norm.swiglu),
    ("fla.modules.mlp", "swiglu_linear", norm.swiglu_linear),
    ("fla.models.modeling_utils", "FusedCrossEntropyLoss", loss.CrossEntropyLoss),
    ("fla.models.modeling_utils", "FusedLinearCrossEntropyLoss", loss.LinearCrossEntropyLoss),
)

_BACKEND_BY_DEVICE = {"cuda": "triton", "cpu": "torch"}
_originals: dict[tuple[str, str], object] = {}
_active: str | None = None


def check_fla_version(version: str | None = None) -> None:
    """Raise if the installed fla (or `version`) is not the one the torch backend was tested on."""
    version = fla.__version__ if version is None else version
    if version != TESTED_FLA_VERSION:
        raise RuntimeError(
            f"the torch backend patches flash-linear-attention {TESTED_FLA_VERSION}, but {version} is "
            f"installed; its internals may differ. Install flash-linear-attention=={TESTED_FLA_VERSION}."
        )


def _owner_and_name(module_name: str, path: str) -> tuple[object, str]:
    """The object holding the patched attribute (a module or a class) and the attribute's name."""
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def _install(use_torch: bool) -> None:
    for module_name, path, replacement in TORCH_PATCHES:
        owner, name = _owner_and_name(module_name, path)
        key = (module_name, path)
        if key not in _originals:
            _originals[key] = getattr(owner, name)
        setattr(owner, name, replacement if use_torch else _originals[key])


def activate(device: str | torch.device) -> str:
    """Select the fla backend for `device` ("cuda" -> "triton", "cpu" -> "torch") and return its name.

    Idempotent; switching between backends is allowed and logged.
    """
    device_type = torch.device(device).type
    if device_type not in _BACKEND_BY_DEVICE:
        raise ValueError(
            f"no fla backend for device type {device_type!r}; expected one of {list(_BACKEND_BY_DEVICE)}."
        )
    check_fla_version()
    backend = _BACKEND_BY_DEVICE[device_type]
    global _active
    if backend != _active:
        import fla.models  # noqa: F401  (imports the layers and registers the Auto classes)

        _install(use_torch=backend == "torch")
        _active = backend
        if backend == "torch":  # fla's own warning about it is silenced in refine/__init__.py
            logger.info("fla: torch backend for device %s (the project's pure-PyTorch ops; Triton needs CUDA)", device)
        else:
            logger.info("fla: triton backend for device %s (fla's own kernels)", device)
    return backend


def active_backend() -> str | None:
    """ "triton", "torch", or None if `activate` was never called."""
    return _active
