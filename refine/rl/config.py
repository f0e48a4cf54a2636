"""`RefineConfig`: the settings of one REFINE update (REFINE.md §1), checked when built.

Defaults are the authors' (c = 8 positions, k = 5 tokens, n = 1 rollout, temperature 1, no
top-p / top-k, entropy selection, margin 20, cosine reward, GRPO with std normalisation,
lambda_ntp = 1, lambda_pg = 0.2, clip 0.2, dual clip 3, one PPO epoch). `__post_init__`
rejects impossible or degenerate settings with a message naming the key and the value it
expects; `validate_for_length(seq_len)` checks the settings against a sequence length, which
the config alone does not know.

Deviations from the authors' code:
- `advantage` (default "grpo") selects the estimator from the registry in `advantages.py`;
  the authors only have GRPO.
- Settings whose groups can never have two different rewards are errors, not silent zero
  gradients: one-member groups (n = 1 with group "prefix", or c = 1 with n = 1) and greedy
  rollouts (temperature 0) grouped per prefix, whose n rollouts are all identical. They only
  matter when lambda_pg > 0.
- `clip` sets both clip bounds (the authors use 0.2 for both).

Memory keys (no effect on the result, to fp32 rounding): `score_micro_batch` rows per forward of
the no-grad scoring pass (the authors' scripts use 2) and `logits_chunk` positions per LM-head
chunk of that pass's entropies (`refine.train.chunked`) and per fp32 cross-entropy chunk of the
NTP term (`refine.rl.losses.ntp_loss`); None = all rows / all positions at once.
`micro_batch_size`: rows of one grad forward per process (the authors' verl
`ppo_micro_batch_size_per_gpu`): each process's share of a mini-batch is processed in micro-batches
of this many rows with gradient accumulation, one optimizer step per mini-batch; their losses are
weighted by their share of the mini-batch's NTP tokens and rollout rows, so the step's gradient is
the whole mini-batch's (`refine.train.refine`); None = the whole per-process mini-batch at once.
Unlike the memory keys above it changes which random numbers each rollout draws (rollouts are
sampled per micro-batch), so with sampling temperature > 0 one seed gives other rollouts.
`mask_eos` (default true, the authors' `min_new_tokens = k`): the model's EOS token(s) cannot be
sampled during the k rollout tokens.
"""

from dataclasses import dataclass

from refine.config import build_dataclass, config_section
from refine.rl.advantages import ADVANTAGE_ESTIMATORS
from refine.rl.positions import SELECTION_MODES, rollout_start_range
from refine.rl.rewards import REWARDS

GROUPINGS = ("auto", "sequence", "prefix")


@dataclass
class RefineConfig:
    """One REFINE update. Groups: "sequence" = the c rollouts of a sequence (n = 1), "prefix" =
    the n rollouts of one prefix (n > 1), "auto" = whichever fits n."""

    num_positions: int = 8
    rollout_len: int = 5
    num_rollouts: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    selection: str = "entropy"
    smoothing_width: int | None = None
    margin: int = 20
    reward: str = "cosine"
    advantage: str = "grpo"
    lambda_ntp: float = 1.0
    lambda_pg: float = 0.2
    clip: float = 0.2
    dual_clip: float = 3.0
    norm_adv_by_std: bool = True
    group: str = "auto"
    mini_batch_size: int | None = None
    micro_batch_size: int | None = None
    ppo_epochs: int = 1
    score_micro_batch: int | None = 2
    logits_chunk: int | None = 1024
    mask_eos: bool = True
    select_per_mini_batch: bool = False  # positions of mini-batch j from its own forward (refine/train/refine.py)

    def __post_init__(self) -> None:
        _at_least("num_positions", self.num_positions, 1)
        _at_least("rollout_len", self.rollout_len, 1)
        _at_least("num_rollouts", self.num_rollouts, 1)
        _at_least("top_k", self.top_k, 0)
        _at_least("margin", self.margin, 0)
        _at_least("ppo_epochs", self.ppo_epochs, 1)
        if self.smoothing_width is not None:
            _at_least("smoothing_width", self.smoothing_width, 1)
        for key in ("mini_batch_size", "micro_batch_size", "score_micro_batch", "logits_chunk"):
            if getattr(self, key) is not None:
                _at_least(key, getattr(self, key), 1)
        if not isinstance(self.select_per_mini_batch, bool):
            raise ValueError(f"select_per_mini_batch must be true or false, got {self.select_per_mini_batch!r}")
        if not isinstance(self.mask_eos, bool):
            raise ValueError(f"mask_eos must be true or false, got {self.mask_eos!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        _known("selection", self.selection, SELECTION_MODES)
        _known("reward", self.reward, REWARDS)
        _known("advantage", self.advantage, ADVANTAGE_ESTIMATORS)
        _known("group", self.group, GROUPINGS)
        for key in ("lambda_ntp", "lambda_pg"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.lambda_ntp == 0 and self.lambda_pg == 0:
            raise ValueError("lambda_ntp and lambda_pg are both 0: set at least one > 0")
        if not 0.0 < self.clip < 1.0:
            raise ValueError(f"clip must be in (0, 1), got {self.clip}")
        if self.dual_clip <= 1.0:
            raise ValueError(
                f"dual_clip must be > 1 (it bounds the loss at -A * dual_clip), got {self.dual_clip}"
            )
        self._check_groups()

    def _check_groups(self) -> None:
        n, c = self.num_rollouts, self.num_positions
        if n > 1 and self.group == "sequence":
            raise ValueError(
                f"group='sequence' needs num_rollouts=1, got num_rollouts={n}; use 'prefix' or 'auto'"
            )
        if n == 1 and self.group == "prefix":
            raise ValueError(
                "group='prefix' with num_rollouts=1 makes one-member groups (zero advantage); "
                "use num_rollouts > 1 or group 'sequence' / 'auto'"
            )
        if self.lambda_pg > 0 and n == 1 and c == 1:
            raise ValueError(
                "num_positions=1 with num_rollouts=1 makes one-member groups (zero advantage); "
                "use num_positions > 1 or num_rollouts > 1, or lambda_pg=0"
            )
        if self.lambda_pg > 0 and self.temperature == 0 and self.grouping == "prefix":
            raise ValueError(
                f"temperature=0 (greedy) makes the num_rollouts={n} rollouts of a prefix identical "
                "(zero advantage); use temperature > 0"
            )

    @property
    def grouping(self) -> str:
        """ "sequence" or "prefix": `group` with "auto" resolved from num_rollouts."""
        if self.group != "auto":
            return self.group
        return "sequence" if self.num_rollouts == 1 else "prefix"

    @property
    def window(self) -> int:
        """Entropy smoothing width as given to `smooth_entropy` (default: rollout_len)."""
        return self.rollout_len if self.smoothing_width is None else self.smoothing_width

    def validate_for_length(self, seq_len: int) -> None:
        """Raise ValueError if sequences of `seq_len` valid tokens cannot hold the c rollouts."""
        if self.rollout_len >= seq_len:
            raise ValueError(f"rollout_len={self.rollout_len} must be < the sequence length {seq_len}")
        first, last = rollout_start_range(seq_len, self.rollout_len, self.margin)
        admissible = last - first + 1
        if admissible < self.num_positions:
            raise ValueError(
                f"num_positions={self.num_positions} chunks do not fit in {seq_len} tokens with "
                f"margin={self.margin} and rollout_len={self.rollout_len}: only {max(admissible, 0)} "
                "admissible rollout starts; lower num_positions or margin, or use longer sequences"
            )


def _at_least(key: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")


def _known(key: str, value: str, known) -> None:
    if value not in known:
        raise ValueError(f"{key} must be one of {sorted(known)}, got {value!r}")


def refine_config(cfg: dict, key: str, source: str = "<config>") -> RefineConfig:
    """The RefineConfig of section `key` of a study config (dotted path, e.g. 'midtrain.refine.refine')."""
    return build_dataclass(RefineConfig, dict(config_section(cfg, key)), key, source)
