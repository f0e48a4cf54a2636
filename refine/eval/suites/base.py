"""What a benchmark suite is: its items, its scorer, its metrics, its table and figures, and the registry.

A suite is one `Suite` subclass registered by name (`@register`). Everything else reads it from the
registry: `refine eval <suite>` (`refine.eval.run`: items, scores, partial credit, aggregation),
`refine report <suite>` (`refine.report.cli`: table, figures) and the workflow (`workflow/rules/common.smk`,
`suites.smk`, `eval.smk`, `report.smk`: the data an evaluation job reads, the TTT runs, the rerun-trigger
keys, one report rule per suite with the suite's output files and captions).

An `Item` is what decoding and test-time training need (the prompt, the generation budget, stop
strings) plus what scoring needs (gold answers, label set) and the keys tables group by (`group`: the
NIAH variant, the QA dataset or the LongBench task; `length`; `depth`).

Adding a suite `<name>`: the module `refine/eval/suites/<name>.py` with a registered `Suite` subclass,
`<name>` in `refine.names.SUITES` (the package imports the module of each name there, in that order: the
tables' order), its config section `eval.<name>` (a dataclass in `refine.eval.config` and its schema entry,
if it has settings) and a test. A suite that reads a file `refine eval-data` must first generate also needs
that generator (`refine.eval.data`) and its rule (`workflow/rules/data.smk`); an output key other than
table, bars and heatmaps needs its one-line caption file `workflow/report/suite_<key>.rst`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from refine.eval.config import EVAL_SECTIONS, eval_config
from refine.report import tables

log = logging.getLogger(__name__)

# The partial-credit metrics of short answers (`refine.eval.run._partial_credit`), beside `score`.
PARTIAL_CREDIT = ("first_token_acc", "char_acc", "answer_logprob")


@dataclass
class Item:
    id: str
    prompt: str
    answers: list[str]
    max_new_tokens: int
    group: str
    length: int | None = None
    depth: float | None = None
    all_classes: list[str] | None = None
    stop_strings: list[str] = field(default_factory=list)
    prompt_token_limit: int | None = None  # middle-truncate the prompt to this many tokens
    truncation: str = "budget"  # how: "budget" (token ids, no BOS) | "official" (LongBench pred.py)
    stop_on_newline_token: bool = False  # end on the tokenizer's newline token, kept in the output
    min_new_tokens: int = 0  # EOS (and the newline stop) barred for this many new tokens
    fit_length: int | None = None  # keep only if prompt tokens (BOS incl.) + official max_gen fit this


@dataclass(frozen=True)
class ReportOutput:
    """One file `refine report <suite>` writes: `key` names the rule's output and picks its caption
    file (`workflow/report/suite_<key>.rst`, which shows `caption`); `path` is relative to results_dir."""

    key: str
    path: str
    category: str
    caption: str


class Suite:
    """A benchmark suite. Subclasses set the class attributes and implement `load_items`, `score`
    and `table`; `aggregate`, `prepare` and `figures` have defaults."""

    name: ClassVar[str] = ""
    # Files under <results>/data/eval/ that `load_items` reads (the evaluation rules' inputs).
    data_files: ClassVar[tuple[str, ...]] = ()
    # Dotted config keys naming local sources read at evaluation time (their files are inputs too).
    source_keys: ClassVar[tuple[str, ...]] = ()
    source_suffixes: ClassVar[tuple[str, ...] | None] = (".jsonl", ".parquet")  # None: every file of a folder
    # Score partial credit (first-token accuracy, character accuracy, answer log-probability).
    partial_credit: ClassVar[bool] = False
    # Config keys (dotted) that its evaluation / its report reads beyond the common ones: the rerun
    # triggers of the evaluation jobs and of its report rule (READS in workflow/rules/common.smk).
    eval_reads: ClassVar[tuple[str, ...]] = ()
    report_reads: ClassVar[tuple[str, ...]] = ()
    # Runs (without the -s<N> seed) evaluated after test-time training in the paper's tables.
    ttt_runs: ClassVar[tuple[str, ...]] = ()
    # What `refine report <name>` writes, in the order of its --out arguments.
    outputs: ClassVar[tuple[ReportOutput, ...]] = ()

    # --- evaluation ---------------------------------------------------------------------------
    def settings(self, cfg: dict) -> Any:
        """This suite's section `eval.<name>` of the study config: its dataclass (`refine.eval.config`,
        defaults filled in) where it has one, else the section as written (a dict; {} when absent)."""
        if self.name in EVAL_SECTIONS:
            return eval_config(cfg, self.name)
        return (cfg.get("eval") or {}).get(self.name) or {}

    def data_dir(self, cfg: dict) -> Path:
        return Path(cfg["results_dir"]) / "data" / "eval"

    def load_items(self, cfg: dict) -> list[Item]:
        raise NotImplementedError

    def prepare(self, items: list[Item], tokenizer) -> list[Item]:
        """The items the model is evaluated on, once its tokenizer is known (default: all)."""
        return items

    def score(self, item: Item, prediction: str) -> float:
        """One item's score in [0, 1]."""
        raise NotImplementedError

    def aggregate(self, items: list[Item], rows: list[dict]) -> dict[str, float]:
        """Flat metrics from per-item rows (`score`, and the partial-credit values if scored):
        `<group>/len<L>/<name>` (×100, log-probabilities as they are) and `<group>/score`, the mean
        over lengths."""
        names = ("score", *PARTIAL_CREDIT) if self.partial_credit else ("score",)
        cells = defaultdict(list)
        for item, row in zip(items, rows, strict=True):
            cells[(item.group, item.length)].append(row)
        metrics: dict[str, float] = {}
        for (group, length), cell in sorted(cells.items()):
            for name in names:
                scale = 1.0 if name == "answer_logprob" else 100.0
                metrics[f"{group}/len{length}/{name}"] = scale * float(np.mean([r[name] for r in cell]))
        for group in sorted({g for g, _ in cells}):
            per_len = [v for k, v in metrics.items() if k.startswith(f"{group}/len") and k.endswith("/score")]
            metrics[f"{group}/score"] = float(np.mean(per_len))
        return metrics

    # --- report -------------------------------------------------------------------------------
    def table(self, runs: list[dict], cfg: dict):
        """The suite's table (a pandas DataFrame) from `refine.report.tables.load_scores` records."""
        raise NotImplementedError

    def figures(self, runs: list[dict], table, outs: dict[str, str], cfg: dict) -> None:
        """Write the figures among `outs` (output key -> path); default: none."""

    def report(self, cfg: dict, inputs: list[str], outs: list[str]) -> None:
        """`refine report <name>`: the table (the first output, CSV) and the figures."""
        if len(outs) != len(self.outputs):
            raise ValueError(f"refine report {self.name}: expected {len(self.outputs)} --out paths "
                             f"({', '.join(o.path for o in self.outputs)}), got {len(outs)}")  # fmt: skip
        runs = tables.load_scores(inputs)
        table = self.table(runs, cfg)
        paths = dict(zip((o.key for o in self.outputs), outs, strict=True))
        tables.write_csv(table, paths[self.outputs[0].key])
        self.figures(runs, table, paths, cfg)


SUITES: dict[str, Suite] = {}  # name -> suite, in registration (table) order


def register(cls: type[Suite]) -> type[Suite]:
    """Class decorator: add an instance of `cls` to `SUITES` under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a suite needs a name")
    if cls.name in SUITES and type(SUITES[cls.name]) is not cls:
        raise ValueError(f"suite {cls.name!r} is registered twice ({type(SUITES[cls.name]).__name__}, {cls.__name__})")
    if not cls.outputs or cls.outputs[0].category != "Tables":
        raise ValueError(f"suite {cls.name!r}: its first report output must be its table")
    SUITES[cls.name] = cls()
    return cls


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite: expected one of {', '.join(SUITES)}, got {name!r}")
    return SUITES[name]
