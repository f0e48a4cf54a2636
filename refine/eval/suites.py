"""Evaluation suites as uniform items and their scorers (RULER NIAH, RULER QA, LongBench).

An `Item` is what decoding and test-time training need (the prompt, the generation budget,
stop strings) plus what scoring needs (gold answers, label set) and the keys tables group by
(`group`: the NIAH variant, the QA dataset or the LongBench task; `length`; `depth`).

Scoring, per item in [0, 1] (tables show ×100):
- niah: RULER's string_match_all (fraction of gold values found in the output);
- qa: 1 if a lower-cased gold answer is a substring of the first line (REFINE.md §4);
- longbench: the official per-task metric with the official first-line post-processing
  (`refine.eval.longbench_metrics.score_prediction`); task scores are the official
  `score_dataset` (mean ×100, rounded to 2 decimals).

LongBench prediction follows `eval.longbench.protocol` (`refine.eval.longbench` describes `official`,
LongBench pred.py, and `budget`) and `eval.longbench.subset` (`fits`: the REFINE authors' rule, records
whose prompt + official generation budget fit `model_max_length`; applied by `select_subset`, which
needs the model's tokenizer). `longbench_source_label` names data, subset and protocol in the table.

Deviation for the embedded default only: `eval.longbench.max_new_tokens_cap` may cap the
official generation budgets (the tiny models' outputs are short); the paper config leaves it off.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from refine.eval.data import read_jsonl
from refine.eval.longbench import (
    AUTHORS_SUBSET_LENGTH,
    AUTHORS_SUBSET_SIZES,
    NEWLINE_STOP_TASKS,
    SAMSUM_MIN_NEW_TOKENS,
    fits_context,
    get_task,
    load_longbench,
    prompt_token_budget,
)
from refine.eval.longbench_metrics import score_prediction
from refine.eval.scoring import qa_substring_match, string_match_all

log = logging.getLogger(__name__)
SUITES = ("niah", "qa", "longbench")


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


def niah_items(path: Path) -> list[Item]:
    return [
        Item(
            id=f"{r['variant']}/{r['context_length']}/{r.get('depth_setting')}/{r['index']}",
            prompt=r["input"],
            answers=list(r["outputs"]),
            max_new_tokens=int(r["max_new_tokens"]),
            group=r["variant"],
            length=int(r["context_length"]),
            depth=r.get("depth"),
        )
        for r in read_jsonl(path)
    ]


def qa_items(path: Path) -> list[Item]:
    return [
        Item(
            id=f"{r.get('dataset', r.get('task', 'qa'))}/{r.get('context_length')}/{r['index']}",
            prompt=r["input"],
            answers=list(r["outputs"]),
            max_new_tokens=int(r["max_new_tokens"]),
            group=str(r.get("dataset", r.get("task", "qa"))),
            length=r.get("context_length") or r.get("length"),
            stop_strings=["\n"],
        )
        for r in read_jsonl(path)
    ]


def longbench_items(
    source: str | Path,
    tasks: list[str],
    model_max_length: int,
    cap: int | None,
    protocol: str = "budget",
    max_length: int | None = None,
    subset: str = "all",
) -> list[Item]:
    """LongBench items; `protocol`, `max_length` (official: pred.py's prompt limit, None = model_max_length)
    and `subset` as in `eval.longbench` (refine.eval.longbench describes them)."""
    items = []
    from_hub = not Path(source).exists() and not str(source).startswith((".", "/"))
    official = protocol == "official"
    for task, records in load_longbench(source, tasks, from_hub=from_hub).items():
        max_gen = get_task(task).max_gen
        budget = min(max_gen, cap) if cap else max_gen
        newline_stop = task in NEWLINE_STOP_TASKS
        for rec in records:
            items.append(
                Item(
                    id=f"{task}/{rec.id}",
                    prompt=rec.prompt,
                    answers=list(rec.answers),
                    max_new_tokens=budget,
                    group=task,
                    length=rec.length,
                    all_classes=list(rec.all_classes) if rec.all_classes else None,
                    stop_strings=["\n"] if newline_stop and not official else [],
                    prompt_token_limit=(max_length or model_max_length)
                    if official
                    else prompt_token_budget(model_max_length, task),
                    truncation=protocol,
                    stop_on_newline_token=newline_stop and official,
                    min_new_tokens=SAMSUM_MIN_NEW_TOKENS if newline_stop and official else 0,
                    fit_length=model_max_length if subset == "fits" else None,
                )
            )
    return items


def select_subset(items: list[Item], tokenizer) -> list[Item]:
    """Items whose `fit_length` is unset or holds their prompt (special tokens included) plus the task's
    official generation budget: the REFINE authors' LongBench subsets. Logs the count per task."""
    kept = [
        item
        for item in items
        if item.fit_length is None
        or fits_context(len(tokenizer(item.prompt, truncation=False)["input_ids"]), item.group, item.fit_length)
    ]
    if len(kept) < len(items) or any(item.fit_length for item in items):
        before, after = Counter(i.group for i in items), Counter(i.group for i in kept)
        lengths = {i.group: i.fit_length for i in items}
        for task in before:
            authors = AUTHORS_SUBSET_SIZES.get(task) if lengths[task] == AUTHORS_SUBSET_LENGTH else None
            note = f" (the authors' {AUTHORS_SUBSET_LENGTH}-token subset has {authors})" if authors else ""
            log.info("LongBench %s: %d of %d records fit%s", task, after[task], before[task], note)
    return kept


def longbench_source_label(spec: dict) -> str:
    """The table's `source`: which data, which records and which prediction rule."""
    if spec["source"] == "synthetic":
        return "synthetic LongBench-format suite"
    parts = [f"LongBench ({spec['source']})"]
    if spec.get("subset") == "fits":
        parts.append(f"authors' subset: prompt + max_gen <= {spec['model_max_length']} tokens")
    if spec.get("protocol") == "official":
        parts.append(f"pred.py truncation to {spec.get('max_length') or spec['model_max_length']}")
    return "; ".join(parts)


def load_items(cfg: dict, suite: str) -> list[Item]:
    """All items of `suite` for the study `cfg` (evaluation data written by `refine eval-data`)."""
    data = Path(cfg["results_dir"]) / "data" / "eval"
    if suite == "niah":
        return niah_items(data / "niah.jsonl")
    if suite == "qa":
        return qa_items(data / "qa_test.jsonl")
    if suite == "longbench":
        spec = cfg["eval"]["longbench"]
        source = data / "longbench" if spec["source"] == "synthetic" else spec["source"]
        return longbench_items(source, spec["tasks"], spec["model_max_length"], spec["max_new_tokens_cap"],
                               spec["protocol"], spec["max_length"], spec["subset"])  # fmt: skip
    raise ValueError(f"suite: expected one of {SUITES}, got {suite!r}")


def score_item(suite: str, item: Item, prediction: str) -> float:
    if suite == "niah":
        return string_match_all(prediction, item.answers)
    if suite == "qa":
        return qa_substring_match(prediction, item.answers)
    return score_prediction(item.group, prediction, item.answers, item.all_classes)
