"""A rough per-GPU memory estimate of a training run, logged before the first step.

`estimate_memory` adds up, in bytes per process:

- params, grads: every parameter as an fp32 master (4 bytes), whatever dtype the model is held in
  when estimated: training always keeps fp32 weights and gradients (bf16 only inside autocast;
  `refine.models.registry.load_model` upcasts, `refine.train.optim.build_optimizer` refuses other
  dtypes), so a bf16 checkpoint costs the same as an fp32 one;
- optimizer: AdamW's two moments, each the size of the parameters;
- comm_buffers: DDP's gradient buckets (a second copy of the gradients); for FSDP the unsharded
  parameters held during a forward (the root's own parameters — embeddings, head, final norm —
  plus two decoder layers: the current and the prefetched one);
- activations: per decoder layer and token, `activation_elements(d, f)` = 10·d + 4·f elements
  (norm inputs and outputs, q/k/v, attention output, residuals, the SwiGLU gate, up, activation
  and product; attention with an SDPA/flash kernel keeps no [T, T] matrix); with gradient
  checkpointing only each layer's input (d elements) plus one layer recomputed at a time;
- logits: rows × min(seq_len, logits_chunk) × vocab × (activation bytes + 8): the logits of one
  chunk of the chunked NTP loss (`refine.train.chunked`), their fp32 copy and its gradient;
  `logits_chunk=None` counts the whole sequence (the unchunked loss);

with tokens = (batch_size / world_size) · seq_len, the rows one process holds at once (a method
that splits its batch further, as REFINE's mini-batches do, needs less). Not counted, for REFINE:
its rollouts (N × k decode rows) and its no-grad scoring pass, bounded to score_micro_batch ×
logits_chunk × vocab logits (fp32 and softmax copies) plus one micro-batch's hidden states of every
layer; its grad forward makes no full logits either (its NTP term is the same chunked loss).
Activations use 2 bytes under bf16 autocast and 4 otherwise; `log_memory_estimate` counts bf16
only on CUDA, where the loop enables autocast (`TrainConfig.bf16` is fp32 on the CPU).
FSDP divides params, grads and optimizer states by world_size. This is an order-of-magnitude
guide to pick a strategy, not an allocator trace.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from refine.train.chunked import DEFAULT_LOGITS_CHUNK
from refine.train.config import TrainConfig

log = logging.getLogger(__name__)

GIB = 1024**3


def activation_elements(hidden: int, intermediate: int) -> int:
    """Activation elements saved per token by one decoder layer without checkpointing."""
    return 10 * hidden + 4 * intermediate


def _model_shape(model: nn.Module) -> tuple[int, int, int, int]:
    """(hidden d, intermediate f, layers L, vocab V) from an HF config; f defaults to 4·d."""
    config = getattr(model, "config", None)
    try:
        hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    except AttributeError as error:
        raise ValueError(f"estimate_memory needs an HF config with hidden_size, num_hidden_layers, "
                         f"vocab_size; {type(model).__name__} has {config!r}") from error  # fmt: skip
    intermediate = getattr(config, "intermediate_size", None)
    if intermediate is None:
        intermediate = int((getattr(config, "hidden_ratio", None) or 4) * hidden)
    return hidden, intermediate, layers, vocab


MASTER_BYTES = 4  # fp32 master weights, gradients and AdamW moments


def _layer_bytes(model: nn.Module) -> tuple[int, int]:
    """(fp32 bytes of the largest decoder layer, of the parameters outside every decoder layer)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    largest = max((sum(p.numel() * MASTER_BYTES for p in m.parameters()) for m in layers), default=0)
    outside = sum(p.numel() * MASTER_BYTES for p in model.parameters() if id(p) not in in_layers)
    return largest, outside


def estimate_memory(
    model: nn.Module,
    cfg: TrainConfig,
    seq_len: int,
    world_size: int,
    strategy: str,
    logits_chunk: int | None = DEFAULT_LOGITS_CHUNK,
    autocast: bool = True,
) -> dict:
    """Estimated bytes per process: {params, grads, optimizer, comm_buffers, activations, logits,
    total}, plus tokens (per process) and num_params. See the module docstring for the formulas.
    `autocast`: whether cfg.bf16 takes effect on the device (the loop enables it on CUDA only)."""
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"strategy must be 'ddp' or 'fsdp', got {strategy!r}")
    hidden, intermediate, layers, vocab = _model_shape(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    param_bytes = sum(p.numel() * MASTER_BYTES for p in model.parameters())
    grad_bytes = sum(p.numel() * MASTER_BYTES for p in trainable)
    shards = world_size if strategy == "fsdp" else 1
    if strategy == "fsdp":
        largest, outside = _layer_bytes(model)
        comm = outside + 2 * largest
    else:
        comm = grad_bytes if world_size > 1 else 0
    rows = max(1, cfg.batch_size // world_size)
    tokens = rows * seq_len
    chunk_tokens = rows * (seq_len if logits_chunk is None else min(seq_len, logits_chunk))
    act_bytes = 2 if cfg.bf16 and autocast else 4
    per_layer = activation_elements(hidden, intermediate)
    if cfg.gradient_checkpointing:
        activations = tokens * act_bytes * (layers * hidden + per_layer)
    else:
        activations = tokens * act_bytes * layers * per_layer
    estimate = {
        "params": param_bytes // shards,
        "grads": grad_bytes // shards,
        "optimizer": 2 * grad_bytes // shards,
        "comm_buffers": comm,
        "activations": activations,
        "logits": chunk_tokens * vocab * (act_bytes + 8),
    }
    estimate["total"] = sum(estimate.values())
    estimate["tokens"] = tokens
    estimate["num_params"] = sum(p.numel() for p in model.parameters())
    return estimate


def free_memory(device: torch.device) -> tuple[int, int] | None:
    """(free, total) bytes of the CUDA device (`torch.cuda.mem_get_info`); None on other devices."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)


def log_memory_estimate(
    model: nn.Module, cfg: TrainConfig, seq_len: int, world_size: int, strategy: str, device: torch.device
) -> dict | None:
    """Log the estimate; a warning naming the remedies if it exceeds the device's free memory.
    Returns the estimate, or None (logged) for a model without an HF config to read sizes from."""
    try:
        autocast = torch.device(device).type == "cuda"
        estimate = estimate_memory(model, cfg, seq_len, world_size, strategy, autocast=autocast)
    except ValueError as error:
        log.info("no memory estimate: %s", error)
        return None
    parts = ", ".join(
        f"{k} {estimate[k] / GIB:.2f}"
        for k in ("params", "grads", "optimizer", "comm_buffers", "activations", "logits")
    )
    log.info(
        "memory estimate per process (%s, %d process(es), %d tokens): %.2f GiB (%s)",
        strategy, world_size, estimate["tokens"], estimate["total"] / GIB, parts,
    )  # fmt: skip
    memory = free_memory(torch.device(device))
    if memory is not None and estimate["total"] > memory[0]:
        log.warning(
            "the run will likely not fit: it needs about %.1f GiB per GPU, %.1f GiB of %.1f GiB are "
            "free on %s. Try train.parallel=fsdp, train.gradient_checkpointing=true, more processes "
            "or a smaller train.batch_size.",
            estimate["total"] / GIB, memory[0] / GIB, memory[1] / GIB, device,
        )  # fmt: skip
    return estimate
