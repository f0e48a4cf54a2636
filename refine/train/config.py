"""`TrainConfig`: the optimizer, schedule, batching and bookkeeping settings of one training run.

One dataclass for everything the shared loop (`refine.train.loop`) needs, whatever the method
(NTP, REFINE, nested post-training). Method settings (rewards, lambda weights, rollouts) live in
the method's own config. Defaults run: they describe a short constant-LR run on a tiny model.

Step semantics: `max_steps`, `warmup_steps`, `checkpoint_every`, `log_every` and `eval_every` all
count *optimizer steps*, not batches: a REFINE update that splits a batch into 4 mini-batches
makes 4 optimizer steps per batch (REFINE.md §1.6).

Batch semantics: `batch_size` (and a REFINE section's `mini_batch_size`) count rows over all
training processes, as the authors' `ppo_mini_batch_size` does; each of W processes takes
batch_size / W rows of every batch (`refine.train.distributed.shard_rows`), so optimizer steps per
batch and `max_steps` mean the same at every W. `check_world_size` checks a study config against
W (called at config validation with the job's process count, and at run start with torchrun's).

`TTTConfig` (`eval.ttt`): the settings of test-time training (`refine.train.ttt`), here beside the
training loop's so that the trainers read them without importing `refine.eval`, which re-exports it
among its evaluation sections (`refine.eval.config.EVAL_SECTIONS`); `ttt_config(cfg)` builds it from
a study config. Its TTT-REFINE block `refine` is a `RefineConfig` whose defaults are the authors'
test-time setting (REFINE.md §2: exact reward, lambda_pg 0.4) over RefineConfig's own; a partial
`eval.ttt.refine` block changes only the fields it names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from refine.config import build_dataclass, check_integer, check_number, check_one_of, config_section
from refine.names import STAGES, TTT_RESETS
from refine.rl.config import RefineConfig

SCHEDULES = ("constant", "cosine", "linear")
PARALLEL_STRATEGIES = ("ddp", "fsdp")
SAVE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the shared training loop.

    lr: peak learning rate. betas, weight_decay: AdamW (decay on weight matrices only, see
    `refine.train.optim`). warmup_steps: linear warmup from lr/warmup_steps to lr.
    schedule: "constant" (no decay), "cosine" or "linear" decay to `min_lr_ratio * lr`, starting
    at `decay_start * max_steps` (a fraction; never before warmup ends) and ending at `max_steps`.
    batch_size: sequences per batch handed to the method. grad_accum: losses backpropagated per
    optimizer step (consecutive batches are accumulated when the method yields one loss per batch).
    grad_clip: max global gradient norm, None to log the norm without clipping.
    checkpoint_every / log_every / eval_every: in optimizer steps; eval_every None disables
    periodic evaluation. bf16: bfloat16 autocast, applied on CUDA only (fp32 on CPU).
    parallel: how several processes (torchrun) share the model — "ddp" replicates it, "fsdp"
    shards it (see `refine.train.distributed`); ignored by a single process; batch_size must then
    be divisible by the number of processes. gradient_checkpointing: recompute each decoder
    layer's activations in the backward pass (the HF model's `activation_checkpointing_enable`); HF
    models then ignore use_cache=True in training, so it suits NTP/SFT, not REFINE's state-carrying
    encode. save_dtype: dtype of the final `model/` checkpoint ("float32", "bfloat16", "float16");
    training always keeps fp32 master weights (bf16 only inside autocast), and the resumable
    checkpoints under `checkpoints/` always hold them in fp32.
    """

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.1
    decay_start: float = 0.0
    max_steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    eval_every: int | None = None
    bf16: bool = True
    parallel: str = "ddp"
    gradient_checkpointing: bool = False
    save_dtype: str = "float32"

    def __post_init__(self) -> None:
        for key in ("lr", "weight_decay", "min_lr_ratio", "decay_start", "grad_clip"):
            value = getattr(self, key)
            if value is None and key == "grad_clip":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                kind = type(value).__name__
                raise ValueError(f"train.{key} must be a finite number, got {value!r} ({kind})")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr!r}")
        betas_are_numbers = all(isinstance(b, int | float) and not isinstance(b, bool) for b in self.betas)
        if len(self.betas) != 2 or not betas_are_numbers or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"train.betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not 0.0 <= self.decay_start < 1.0:
            raise ValueError(f"train.decay_start must be a fraction in [0, 1), got {self.decay_start!r}")
        for key in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"train.{key} must be an integer >= 1, got {value!r}")
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(
                f"train.warmup_steps must be an integer in [0, max_steps={self.max_steps}], "
                f"got {self.warmup_steps!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"train.grad_clip must be > 0 or null (no clipping), got {self.grad_clip!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"train.seed must be an integer >= 0, got {self.seed!r}")
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise ValueError(f"train.eval_every must be an integer >= 1 or null, got {self.eval_every!r}")
        if self.parallel not in PARALLEL_STRATEGIES:
            raise ValueError(f"train.parallel must be one of {PARALLEL_STRATEGIES}, got {self.parallel!r}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"train.save_dtype must be one of {SAVE_DTYPES}, got {self.save_dtype!r}")
        for key in ("bf16", "gradient_checkpointing"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"train.{key} must be true or false, got {getattr(self, key)!r}")


def training_processes(cfg: dict) -> int:
    """Processes of one training job of a study config (as workflow/rules/common.smk launches
    them): `procs_per_job` if set, else `gpus_per_job` on CUDA, else 1."""
    gpus = cfg.get("gpus_per_job", 1) if cfg.get("device") == "cuda" else 1
    return cfg.get("procs_per_job") or max(gpus, 1)


def check_world_size(cfg: dict, world_size: int, sections: list[str] | None = None) -> None:
    """ValueError (one line, naming the key) unless every training section's global `batch_size`
    and REFINE `mini_batch_size` split evenly over `world_size` processes.

    cfg: a study config (dict); sections: the stage sections to check, e.g. ["midtrain.refine"]
    (default: every midtrain/posttrain method, and pretrain unless every model is imported from a
    checkpoint). Test-time training runs in one process and is not checked.
    """
    if sections is None:
        scratch = any(not entry.get("pretrained") for entry in (cfg.get("models") or {}).values())
        sections = ["pretrain"] * scratch + [
            f"{stage}.{method}"
            for stage in STAGES[1:]
            for method, body in (cfg.get(stage) or {}).items()
            if isinstance(body, dict)
        ]
    for section in sections:
        node = cfg
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        batch = (node.get("train") or {}).get("batch_size", TrainConfig.batch_size)
        mini = (node.get("refine") or {}).get("mini_batch_size")
        for key, value in ((f"{section}.train.batch_size", batch), (f"{section}.refine.mini_batch_size", mini)):
            if isinstance(value, int) and value % world_size:
                raise ValueError(
                    f"{key}={value} is not divisible by the {world_size} training processes: batch sizes "
                    f"are global (each process takes {key.rsplit('.', 1)[-1]} / {world_size} rows)"
                )


def train_config(cfg: dict, key: str, source: str = "<config>", seed: int | None = None) -> TrainConfig:
    """The TrainConfig of section `key` of a study config (dotted path, e.g. 'midtrain.sft.train');
    `seed` replaces the section's seed (one run of a multi-seed study)."""
    values = dict(config_section(cfg, key))
    if seed is not None:
        values["seed"] = seed
    return build_dataclass(TrainConfig, values, key, source)


# The authors' test-time REFINE setting (REFINE.md §2), over RefineConfig's mid-training defaults.
TTT_REFINE_DEFAULTS = {"reward": "exact", "lambda_pg": 0.4}


@dataclass
class TTTConfig:
    """`eval.ttt`: test-time training before decoding (`refine.train.ttt`). reset: "example"
    (weights restored before each prompt) or "cumulative" (one optimizer across test batches, the
    authors' code); batch_size: prompts per test batch (cumulative); mini_batch_size: rows per
    optimizer step (the authors: 2 steps per test batch of 8); steps: passes over each test batch;
    lr, weight_decay: AdamW (verl's default decay); refine: the TTT-REFINE update."""

    reset: str = "example"
    batch_size: int = 8
    mini_batch_size: int = 4
    steps: int = 1
    lr: float = 1.0e-6
    weight_decay: float = 0.01
    refine: RefineConfig = field(default_factory=lambda: RefineConfig(**TTT_REFINE_DEFAULTS))

    def __post_init__(self) -> None:
        check_one_of("reset", self.reset, TTT_RESETS)
        for key in ("batch_size", "mini_batch_size", "steps"):
            check_integer(key, getattr(self, key), 1)
        check_number("lr", self.lr, positive=True)
        check_number("weight_decay", self.weight_decay, positive=False)


def ttt_config(cfg: dict, source: str = "<config>") -> TTTConfig:
    """The validated TTTConfig of section `eval.ttt` of a study config; keys it leaves out (the
    whole section too) take the dataclass defaults (its `refine` block field by field)."""
    values = (cfg.get("eval") or {}).get("ttt") or {}
    return build_dataclass(TTTConfig, dict(values), "eval.ttt", source)
