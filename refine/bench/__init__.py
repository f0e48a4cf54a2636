"""`refine bench`: what REFINE costs against what a user would do instead, side by side (issue 12).

One command, one CSV (`results/bench/update_cost.csv`, columns `COLUMNS`, one row per measured
variant) and one figure (`refine report bench`). Its measurements, each interleaved round-robin
in one process so that ratios never come from separate runs (the first round is warm-up):

- `update` (`refine.bench.update`): one NTP-SFT update, one REFINE one-pass update, the same
  with the paper's 4 mini-batches per batch (4 optimizer steps), and the authors' re-encode
  structure, per architecture (tiny DeltaNet and LaCT);
- `trl` (`refine.bench.trl_grpo`): TRL's GRPOTrainer doing REFINE's job on the tiny DeltaNet
  vs the project's update vs NTP (needs the `[bench]` extra: `pip install -e .[bench]`; skipped,
  with a warning, without it);
- `decode` (`refine.bench.decode`): greedy decoding from the states one pass leaves at the
  selected positions vs `model.generate` with fla's cache on the same prompts;
- `vs_seq_len`, `vs_positions` (`refine.bench.scaling`): one-pass vs re-encode update time as
  S and c grow.

Every row records the torch threads, the CPU the *other* processes used during its timed calls
(cores, `refine.bench.measure`) and the commit. Sizes are `BenchConfig` fields, read from the
study config's `bench:` section (defaults here, not in the schema), then from the command line;
`--quick` shrinks everything to seconds (the test suite runs it).

This module stays import-light (no torch): the CLI builds its parser from it.

Deviations: the vocabulary is random tokens over `vocab_size` (1024, the size of the study's word
vocabulary), not real text; costs do not depend on token values.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

log = logging.getLogger(__name__)

COLUMNS = (
    "measurement",
    "arch",
    "variant",
    "seq_len",
    "batch_size",
    "num_positions",
    "rollout_len",
    "num_rollouts",
    "mini_batches",
    "timed",
    "threads",
    "median_s",
    "min_s",
    "max_s",
    "tokens_per_s",
    "peak_rss_delta_mib",
    "other_cpu_cores",
    "ratio",
    "ratio_to",
    "commit",
)
NUMERIC = ("median_s", "min_s", "max_s", "tokens_per_s", "peak_rss_delta_mib", "other_cpu_cores", "ratio")
MEASUREMENTS = ("update", "trl", "decode", "vs_seq_len", "vs_positions")

# Tiny models and sizes of `--quick` (seconds; tests/test_bench.py runs it).
QUICK_OVERRIDES = {
    "delta_net": {"hidden_size": 32, "num_hidden_layers": 1, "num_heads": 2},
    "lact": {"hidden_size": 32, "num_hidden_layers": 1, "window_size": 16, "lact_chunk_size": 16},
}


@dataclass
class BenchConfig:
    """The sizes of `refine bench` (the study config's `bench:` section; CLI flags override)."""

    measurements: tuple[str, ...] = MEASUREMENTS
    archs: tuple[str, ...] = ("delta_net", "lact")
    seq_len: int = 2048
    batch_size: int = 4
    # the benchmark's workload (issue 12: S = 2048, c = 8, k = 5), not the training defaults
    num_positions: int = 8
    rollout_len: int = 5
    repeats: int = 2  # timed rounds per measurement (plus one warm-up round); the default run fits ~10 min
    mini_batches: int = 4  # the paper's mini-batches per batch (128 / 32)
    reencode_archs: tuple[str, ...] = ("delta_net",)  # LaCT's re-encode update takes ~70 s: left out by default
    trl_batch_size: int = 1  # 8 prompts x 2 completions; TRL needs ~30-60 s per update at S = 2048
    trl_repeats: int = 2
    decode_batch_size: int = 1  # sequences whose c prefixes are decoded (B*c prompts)
    decode_new_tokens: int = 32
    scaling_seq_lens: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)
    scaling_positions: tuple[int, ...] = (2, 4, 8, 16, 32)
    scaling_batch_size: int = 1
    scaling_repeats: int = 1
    margin: int | None = None  # None: RefineConfig's default (one source of truth)
    vocab_size: int = 1024
    seed: int = 0
    threads: int | None = None  # torch threads (None: torch's default)
    overrides: dict = field(default_factory=dict)  # arch -> tiny-model config overrides

    def __post_init__(self) -> None:
        for name in ("measurements", "archs", "reencode_archs", "scaling_seq_lens", "scaling_positions"):
            setattr(self, name, tuple(getattr(self, name)))
        unknown = sorted(set(self.measurements) - set(MEASUREMENTS))
        if unknown:
            raise ValueError(f"measurements: unknown {unknown}; known: {list(MEASUREMENTS)}")
        for name in ("seq_len", "batch_size", "num_positions", "rollout_len", "repeats", "mini_batches",
                     "trl_batch_size", "trl_repeats", "decode_batch_size", "decode_new_tokens", "scaling_batch_size",
                     "scaling_repeats", "vocab_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.mini_batches:
            raise ValueError(
                f"batch_size {self.batch_size} must divide into mini_batches {self.mini_batches} equal mini-batches"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or null, got {self.threads}")

    def refine_fields(self) -> dict:
        """The RefineConfig fields the bench sets (margin only when given: else RefineConfig's default)."""
        fields = {"num_positions": self.num_positions, "rollout_len": self.rollout_len}
        return fields if self.margin is None else {**fields, "margin": self.margin}

    def quick(self) -> BenchConfig:
        """The same measurements on tiny models and sizes (seconds)."""
        return replace(
            self, seq_len=64, batch_size=4, num_positions=3, rollout_len=3, repeats=1, trl_batch_size=1,
            trl_repeats=1, decode_batch_size=2, decode_new_tokens=4, scaling_seq_lens=(64, 128),
            scaling_positions=(2, 4), scaling_repeats=1, margin=8, vocab_size=50,
            overrides={**QUICK_OVERRIDES, **self.overrides},
        )  # fmt: skip


def bench_config(section: dict | None, source: str = "<config>") -> BenchConfig:
    """`BenchConfig` from a config's `bench:` mapping, errors naming `bench.<field>` (ConfigError)."""
    from refine.config import build_dataclass

    return build_dataclass(BenchConfig, dict(section or {}), "bench", source)


# (flag, field, type, nargs, help) of the command line; a flag left out keeps the config's value.
_FLAGS = (
    ("--measurements", "measurements", str, "+", f"any of {' '.join(MEASUREMENTS)}"),
    ("--archs", "archs", str, "+", "delta_net lact"),
    ("--seq-len", "seq_len", int, None, "S"),
    ("--batch-size", "batch_size", int, None, "B"),
    ("--num-positions", "num_positions", int, None, "c"),
    ("--rollout-len", "rollout_len", int, None, "k"),
    ("--repeats", "repeats", int, None, "timed rounds (plus 1 warm-up)"),
    ("--mini-batches", "mini_batches", int, None, "mini-batches per batch of the paper's structure"),
    ("--threads", "threads", int, None, "torch threads (default: torch's)"),
)


def add_arguments(parser) -> None:
    """The `refine bench` options (the CLI calls `main(args)` with them parsed)."""
    parser.add_argument("--config", help="study config YAML: its `bench:` section (BenchConfig) sets the sizes")
    for flag, dest, type_, nargs, help_text in _FLAGS:
        parser.add_argument(flag, dest=dest, type=type_, nargs=nargs, default=None, help=help_text)
    parser.add_argument("--quick", action="store_true", help="tiny models and sizes (seconds)")
    parser.add_argument("--out", default="results/bench/update_cost.csv", help="the CSV to write")


def config_from_args(args, cfg: dict | None = None) -> BenchConfig:
    """BenchConfig: dataclass defaults < the config's `bench:` section < command-line flags < --quick."""
    values = dict((cfg or {}).get("bench") or {})
    values.update({dest: getattr(args, dest) for _, dest, *_ in _FLAGS if getattr(args, dest, None) is not None})
    bench = bench_config(values, getattr(args, "config", None) or "<command line>")
    return bench.quick() if getattr(args, "quick", False) else bench


def main(args, cfg: dict | None = None) -> list[dict]:
    """Run every measurement of the parsed options, write the CSV and log a summary table."""
    from refine.bench.run import run_bench

    bench = config_from_args(args, cfg)
    log.info("bench config: %s", asdict(bench))
    return run_bench(bench, args.out)


__all__ = ["COLUMNS", "MEASUREMENTS", "BenchConfig", "add_arguments", "bench_config", "main"]
