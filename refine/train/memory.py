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

with tokens = rows · seq_len, `rows` the rows one process holds in one forward: batch_size /
world_size for NTP (`grad_accum` accumulates further batches of that size, it does not shrink
them); for REFINE (`refine` given) its gradient micro-batch (`refine.micro_batch_size`), else its
per-process mini-batch (mini_batch_size / world_size), else batch_size / world_size. REFINE adds:

- states: 4 bytes × `state_elements` (one row's state, every layer) × (rows·c·(1 + 2n) + the
  snapshots of the forward): the states at the c starts (graph-connected), their detached copies
  for the n rollouts and their graph copies for the teacher-forced decode; the snapshots are, for
  a model with a state recorder (LaCT), the fast weights (and momenta) before every chunk
  (ceil(S / chunk) per row; the recorded chunk tokens and window keys are the layer's activations),
  for DeltaNet's torch recorder (CPU) its state at every 64-token chunk start, and for DeltaNet on
  the path CUDA takes (`encode_segments`, fla's Triton kernels have no recorder; the default) one
  state of every row at each of the rows·c + 1 segment bounds, stacked once more to gather them
  (2·rows·(rows·c + 1)). States count 4 bytes an element (LaCT's state buffers are fp32);
- scoring: the no-grad scoring pass, score_micro_batch rows with one layer's activations and one
  logits chunk (fp32 and softmax copies) at a time, plus the hidden states it returns for every row
  of the process's batch; counted on top of the grad forward (an upper bound: the forward of the
  first micro-batch is alive during it when the model has a recorder).

Not counted: the rollouts' k decode steps (N × k rows), LaCT's per-chunk fast-weight update
intermediates (Muon's Newton–Schulz iterates) and DeltaNet's per-chunk kernel states.
Activations use 2 bytes under bf16 autocast and 4 otherwise; `log_memory_estimate` counts bf16
only on CUDA, where the loop enables autocast (`TrainConfig.bf16` is fp32 on the CPU).
FSDP divides params, grads and optimizer states by world_size. This is an order-of-magnitude
guide to pick a strategy, not an allocator trace.

`python -m refine.train.memory --config config/paper.yaml` prints the estimate of every training
section (mid-training, post-training, test-time training) of a study config per model and GPU, for
meta-device models of the configured architectures (no weights are read): the shapes of the
paper's checkpoints for hub names (`PAPER_SHAPES`), the config.json of a local checkpoint, or the
tiny overrides of a model trained from scratch.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from refine.rl.config import RefineConfig
from refine.train.chunked import DEFAULT_LOGITS_CHUNK
from refine.train.config import TrainConfig, training_processes, ttt_config

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
    if intermediate is None and getattr(config, "hidden_ratio", None) is not None:
        # fla's GatedMLP (and LaCT's SwiGLU MLP): 2/3 · ratio · hidden, rounded up to a multiple of 256
        intermediate = 256 * ((int(hidden * config.hidden_ratio * 2 / 3) + 255) // 256)
    if intermediate is None:
        intermediate = 4 * hidden
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
    refine: RefineConfig | None = None,
    recorder: bool | None = None,
) -> dict:
    """Estimated bytes per process: {params, grads, optimizer, comm_buffers, activations, logits,
    states, scoring, total}, plus rows and tokens (per process and forward) and num_params. See the
    module docstring for the formulas. `autocast`: whether cfg.bf16 takes effect on the device (the
    loop enables it on CUDA only). `refine`: the REFINE update's config (None: NTP); `recorder`:
    whether its states come from a state recorder (default: LaCT yes, DeltaNet no, as on CUDA)."""
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
    rows = forward_rows(cfg, world_size, refine)
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
        "states": 0,
        "scoring": 0,
    }
    if refine is not None:
        estimate["states"] = _refine_state_bytes(model, refine, rows, seq_len, recorder)
        score_rows = min(refine.score_micro_batch or rows, rows)
        chunk = seq_len if refine.logits_chunk is None else min(seq_len, refine.logits_chunk)
        batch_rows = max(1, cfg.batch_size // world_size)
        estimate["scoring"] = (
            score_rows * seq_len * per_layer * act_bytes
            + score_rows * chunk * vocab * 8
            + batch_rows * seq_len * hidden * act_bytes
        )
    estimate["total"] = sum(estimate.values())
    estimate["rows"] = rows
    estimate["tokens"] = tokens
    estimate["num_params"] = sum(p.numel() for p in model.parameters())
    return estimate


def forward_rows(cfg: TrainConfig, world_size: int, refine: RefineConfig | None = None) -> int:
    """Rows one process holds in one grad forward (see the module docstring)."""
    rows = max(1, cfg.batch_size // world_size)
    if refine is None:
        return rows
    if refine.mini_batch_size is not None:
        rows = min(rows, max(1, refine.mini_batch_size // world_size))
    return min(rows, refine.micro_batch_size or rows)


def state_elements(config) -> int:
    """Elements of one row's state over all layers, as `refine.models.state` holds it (fla's Cache
    layout): DeltaNet's recurrent state [H, dk/H, dv/H] and short-conv states [dim, conv_size] per
    layer; LaCT's fast weights w0, w1, w2 (and momenta), its window keys and values of window − 1
    tokens (and their positions), the pending chunk's keys, values, learning rates and gates."""
    kind = getattr(config, "model_type", "")
    d, layers = config.hidden_size, config.num_hidden_layers
    if kind == "lact":
        hf = config.num_lact_heads
        df = d // hf
        dh = int(df * config.inter_multi)
        fast = 3 * hf * dh * df * (2 if config.use_momentum else 1)
        window = (config.window_size - 1) * (2 * d + 1)
        pending = config.lact_chunk_size * (2 * d + 4 * hf)
        return layers * (fast + window + pending + 1)
    if kind == "delta_net":
        dk, dv = int(d * config.expand_k), int(d * config.expand_v)
        conv = config.conv_size * (2 * dk + dv) if config.use_short_conv else 0
        return layers * (dk * dv // config.num_heads + conv)
    raise ValueError(f"no state size for model type {kind!r} (delta_net, lact)")


def _refine_state_bytes(model, refine: RefineConfig, rows: int, seq_len: int, recorder: bool | None) -> int:
    config = model.config
    one = 4 * state_elements(config)
    recorder = config.model_type == "lact" if recorder is None else recorder
    c, n = refine.num_positions, refine.num_rollouts
    if recorder and config.model_type == "lact":  # the fast weights (and momenta) before every chunk
        fast = 3 * config.num_hidden_layers * config.hidden_size * int(
            config.hidden_size // config.num_lact_heads * config.inter_multi) * (2 if config.use_momentum else 1)
        snapshots = 4 * fast * rows * -(-seq_len // config.lact_chunk_size)
    elif recorder:  # DeltaNet's torch recorder (CPU): the state at every 64-token chunk start
        snapshots = one * rows * -(-seq_len // 64)
    else:  # encode_segments: every row's state at each of the rows*c + 1 bounds, stacked once more
        snapshots = one * 2 * rows * (rows * c + 1)
    return one * rows * c * (1 + 2 * n) + snapshots


def free_memory(device: torch.device) -> tuple[int, int] | None:
    """(free, total) bytes of the CUDA device (`torch.cuda.mem_get_info`); None on other devices."""
    if device.type != "cuda":
        return None
    return torch.cuda.mem_get_info(device)


PARTS = ("params", "grads", "optimizer", "comm_buffers", "activations", "logits", "states", "scoring")


def method_refine_config(method) -> RefineConfig | None:
    """The RefineConfig of a REFINE method or of a nested method's inner REFINE step, else None."""
    for candidate in (method, getattr(method, "inner", None)):
        cfg = getattr(candidate, "cfg", None)
        if isinstance(cfg, RefineConfig):
            return cfg
    return None


def log_memory_estimate(
    model: nn.Module, cfg: TrainConfig, seq_len: int, world_size: int, strategy: str, device: torch.device,
    refine: RefineConfig | None = None,
) -> dict | None:
    """Log the estimate; a warning naming the remedies if it exceeds the device's free memory.
    Returns the estimate, or None (logged) for a model without an HF config to read sizes from."""
    try:
        autocast = torch.device(device).type == "cuda"
        estimate = estimate_memory(model, cfg, seq_len, world_size, strategy, autocast=autocast, refine=refine)
    except ValueError as error:
        log.info("no memory estimate: %s", error)
        return None
    parts = ", ".join(f"{k} {estimate[k] / GIB:.2f}" for k in PARTS)
    log.info(
        "memory estimate per process (%s, %d process(es), %d rows x %d tokens per forward): %.2f GiB (%s)",
        strategy, world_size, estimate["rows"], seq_len, estimate["total"] / GIB, parts,
    )  # fmt: skip
    memory = free_memory(torch.device(device))
    if memory is not None and estimate["total"] > memory[0]:
        log.warning(
            "the run will likely not fit: it needs about %.1f GiB per GPU, %.1f GiB of %.1f GiB are "
            "free on %s. Try train.parallel=fsdp, train.gradient_checkpointing=true (NTP), a smaller "
            "train.batch_size with train.grad_accum (NTP), refine.micro_batch_size (REFINE) or more processes.",
            estimate["total"] / GIB, memory[0] / GIB, memory[1] / GIB, device,
        )  # fmt: skip
    return estimate


# The shapes of the paper's checkpoints (REFINE.md section 3), for meta-device models: no download.
PAPER_SHAPES = {
    "delta_net": dict(hidden_size=2048, num_hidden_layers=24, num_heads=16, vocab_size=32000, use_short_conv=True,
                      conv_size=4, fuse_cross_entropy=False),  # fla-hub/delta_net-1.3B-100B
    "lact": "LACT_760M",  # refine.models.lact: YunjinZhang/lact_llm (760M)
}


def meta_model(entry: dict, vocab_size: int = 32000) -> nn.Module:
    """A meta-device (no storage) model of a study's `models.<name>` entry: a local hf-format
    checkpoint's config.json, else the paper's shape of its architecture for a hub checkpoint, else
    the tiny model its `config` overrides build."""
    from pathlib import Path

    arch, pretrained = entry["arch"], entry.get("pretrained")
    local = pretrained is not None and (Path(pretrained) / "config.json").is_file()
    with torch.device("meta"):
        if local and entry.get("checkpoint_format", "hf") == "hf":
            from transformers import AutoConfig, AutoModelForCausalLM

            from refine.models.registry import _register_architectures

            _register_architectures()
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(pretrained))
        if arch == "lact":
            from refine.models import lact

            if pretrained is not None:
                return lact.LaCTForCausalLM(lact.LaCTConfig(**lact.LACT_760M))
            return lact.LaCTForCausalLM(lact.LaCTConfig(**{**lact.LACT_TINY, **(entry.get("config") or {}),
                                                            "vocab_size": vocab_size}))  # fmt: skip
        from refine.models.fla_models import MODEL_CLASSES, TINY_CONFIGS

        config_class, model_class = MODEL_CLASSES[arch]
        if pretrained is not None and arch in PAPER_SHAPES:
            return model_class(config_class(**PAPER_SHAPES[arch]))
        return model_class(config_class(**{**TINY_CONFIGS[arch], **(entry.get("config") or {}),
                                           "vocab_size": vocab_size}))  # fmt: skip


def study_sections(cfg: dict) -> list[tuple[str, TrainConfig, RefineConfig | None, int, int, str]]:
    """Every training section of a resolved study config: (name, TrainConfig, RefineConfig or None,
    sequence length, processes, strategy). Mid-training reads data.midtrain.seq_len, post-training
    eval.qa.train_length + posttrain.max_answer_tokens; test-time training (TTT-SFT and TTT-REFINE)
    runs in one process on prompts of the longest eval length (eval.niah.lengths, eval.qa.lengths),
    with AdamW like training: one prompt per update with eval.ttt.reset "example",
    eval.ttt.mini_batch_size with "cumulative". `cfg` is resolved (`refine.study.validate_config`
    fills the eval sections' defaults), so the eval lengths are read from it as they stand."""
    world = training_processes(cfg)
    evals = cfg["eval"]
    ttt = ttt_config(cfg)
    out = []
    for stage, length in (
        ("midtrain", cfg["data"]["midtrain"]["seq_len"]),
        ("posttrain", evals["qa"]["train_length"] + cfg["posttrain"]["max_answer_tokens"]),
    ):
        for method, section in cfg.get(stage, {}).items():
            if not isinstance(section, dict) or "train" not in section:
                continue
            train_cfg = TrainConfig(**section["train"])
            refine = RefineConfig(**section["refine"]) if "refine" in section else None
            out.append((f"{stage}.{method}", train_cfg, refine, length, world, train_cfg.parallel))
    length = max([*evals["niah"]["lengths"], *evals["qa"]["lengths"]])
    rows = 1 if ttt.reset == "example" else min(ttt.mini_batch_size, ttt.batch_size)
    train_cfg = TrainConfig(batch_size=rows, lr=ttt.lr)
    out.append(("eval.ttt_sft", train_cfg, None, length, 1, "ddp"))
    out.append(("eval.ttt_refine", train_cfg, ttt.refine, length, 1, "ddp"))
    return out


def study_table(cfg: dict) -> list[dict]:
    """Rows {model, section, rows, seq_len, processes, strategy, checkpointing, micro_batches, GiB}: the
    estimate per GPU (CUDA: bf16 autocast) of every training section of every model of a study."""
    table = []
    vocab = 32000
    for name, entry in cfg["models"].items():
        model = meta_model(entry, vocab)
        for section, train_cfg, refine, length, world, strategy in study_sections(cfg):
            est = estimate_memory(model, train_cfg, length, world, strategy, autocast=True, refine=refine)
            local = max(1, train_cfg.batch_size // world)
            if refine is not None and refine.mini_batch_size is not None:
                local = min(local, max(1, refine.mini_batch_size // world))
            table.append({
                "model": name, "section": section, "rows": est["rows"], "seq_len": length, "processes": world,
                "strategy": strategy, "checkpointing": train_cfg.gradient_checkpointing,
                "micro_batches": -(-local // est["rows"]) if refine is not None else train_cfg.grad_accum,
                "GiB": est["total"] / GIB, **{k: est[k] / GIB for k in PARTS},
            })  # fmt: skip
    return table


def main(argv: list[str] | None = None) -> list[dict]:
    """`python -m refine.train.memory --config config/paper.yaml [--gpu-gib 80]`: a markdown table
    of the per-GPU estimate of every training section, on stdout."""
    import argparse
    import sys

    from refine.config import REPO_ROOT, merge_config_files
    from refine.study import validate_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", required=True, help="a study config, merged over config/config.yaml")
    parser.add_argument("--gpu-gib", type=float, default=80.0, help="GPU memory to compare with (GiB)")
    args = parser.parse_args(argv)
    cfg = validate_config(merge_config_files([REPO_ROOT / "config" / "config.yaml", args.config]), args.config)
    table = study_table(cfg)
    lines = [
        "| model | section | rows x tokens per forward | forwards per step | strategy | GiB per GPU | fits |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table:
        forwards = f"{row['micro_batches']} (micro-batches)" if row["section"].endswith("refine") else (
            f"{row['micro_batches']} (grad_accum)")  # fmt: skip
        ckpt = ", grad ckpt" if row["checkpointing"] else ""
        lines.append(
            f"| {row['model']} | {row['section']} | {row['rows']} x {row['seq_len']} | {forwards} | "
            f"{row['strategy']} x {row['processes']}{ckpt} | {row['GiB']:.1f} | "
            f"{'yes' if row['GiB'] <= args.gpu_gib else 'NO'} |"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return table


if __name__ == "__main__":
    main()
