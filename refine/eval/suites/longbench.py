"""LongBench v1 (REFINE.md §4): items, the official per-task metrics, the table of tasks and Avg, bars.

Score per item: the official per-task metric with the official first-line post-processing
(`refine.eval.longbench_metrics.score_prediction`); task scores are the official `score_dataset`
(mean ×100, rounded to 2 decimals) and `avg/score` their mean. No partial credit (long answers).
Test-time training is evaluated on the REFINE mid-trained model, as in the paper's table.

LongBench prediction follows `eval.longbench.protocol` (`refine.eval.longbench` describes `official`,
LongBench pred.py, and `budget`) and `eval.longbench.subset` (`fits`: the REFINE authors' rule, records
whose prompt + official generation budget fit `model_max_length`; applied by `select_subset`, which
needs the model's tokenizer). `longbench_source_label` names data, subset and protocol in the table.

Deviation for the embedded default only: `eval.longbench.max_new_tokens_cap` may cap the
official generation budgets (the tiny models' outputs are short); the paper config leaves it off.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

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
from refine.eval.longbench_metrics import score_dataset, score_prediction
from refine.eval.suites.base import Item, ReportOutput, Suite, register
from refine.report.tables import seed_table

log = logging.getLogger(__name__)


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


def longbench_source_label(spec) -> str:
    """The table's `source`: which data, which records and which prediction rule (`spec`: the
    `eval.longbench` section, as a `LongBenchConfig` or a dict)."""
    spec = asdict(spec) if is_dataclass(spec) else spec
    if spec["source"] == "synthetic":
        return "synthetic LongBench-format suite"
    parts = [f"LongBench ({spec['source']})"]
    if spec.get("subset") == "fits":
        parts.append(f"authors' subset: prompt + max_gen <= {spec['model_max_length']} tokens")
    if spec.get("protocol") == "official":
        parts.append(f"pred.py truncation to {spec.get('max_length') or spec['model_max_length']}")
    return "; ".join(parts)


def longbench_table(runs: list[dict], source: str):
    """One column per task and Avg; `source` names the data (the synthetic suite is not LongBench)."""
    rows = []
    for run in runs:
        m = run["metrics"]
        row = {"model": run["model"], "method": run["method"], "seed": run["seed"]}
        row.update(
            {k.rsplit("/", 1)[0]: v for k, v in m.items() if k.endswith("/score") and k != "avg/score"}
        )
        row["Avg"] = m["avg/score"]
        rows.append(row)
    table = seed_table(rows)
    table.insert(2, "source", source)
    return table


@register
class LongBench(Suite):
    name = "longbench"
    data_files = ("longbench.summary.json",)
    source_keys = ("eval.longbench.source",)
    eval_reads = tuple(f"eval.longbench.{k}" for k in ("source", "tasks", "model_max_length", "max_new_tokens_cap",
                                                        "protocol", "max_length", "subset"))  # fmt: skip
    report_reads = tuple(f"eval.longbench.{k}" for k in ("source", "subset", "protocol", "model_max_length",
                                                          "max_length"))  # fmt: skip
    ttt_runs = ("mid-refine",)
    outputs = (
        ReportOutput("table", "longbench_table.csv", "Tables",
                     "LongBench-format scores (official metrics, x100) per task and their average; the "
                     "``source`` column names the data (the default is a synthetic LongBench-format suite, not "
                     "LongBench)."),
        ReportOutput("bars", "figures/longbench_bars.png", "Figures",
                     "Average LongBench-format score per method; error bars are the standard deviation over "
                     "seeds."),
    )  # fmt: skip

    def load_items(self, cfg: dict) -> list[Item]:
        spec = self.settings(cfg)
        source = self.data_dir(cfg) / "longbench" if spec.source == "synthetic" else spec.source
        return longbench_items(source, spec.tasks, spec.model_max_length, spec.max_new_tokens_cap, spec.protocol,
                               spec.max_length, spec.subset)  # fmt: skip

    def prepare(self, items: list[Item], tokenizer) -> list[Item]:
        return select_subset(items, tokenizer)

    def score(self, item: Item, prediction: str) -> float:
        return score_prediction(item.group, prediction, item.answers, item.all_classes)

    def aggregate(self, items: list[Item], rows: list[dict]) -> dict[str, float]:
        """`<task>/score`: the official `score_dataset` of the task's predictions; `avg/score`: their mean."""
        by_task = defaultdict(list)
        for item, row in zip(items, rows, strict=True):
            by_task[item.group].append((row["prediction"], item.answers, item.all_classes))
        metrics: dict[str, float] = {}
        for task, entries in by_task.items():
            preds, answers, classes = zip(*entries, strict=True)
            metrics[f"{task}/score"] = score_dataset(task, list(preds), list(answers), classes[0])
        metrics["avg/score"] = float(np.mean([v for k, v in metrics.items() if k.endswith("/score")]))
        return metrics

    def table(self, runs: list[dict], cfg: dict):
        return longbench_table(runs, longbench_source_label(self.settings(cfg)))

    def figures(self, runs: list[dict], table, outs: dict[str, str], cfg: dict) -> None:
        from refine.report import figures  # matplotlib: only when drawing, not when the rules import suites

        label = longbench_source_label(self.settings(cfg))
        figures.method_bars(table, ["Avg"], outs["bars"], f"{label}: average of the tasks")
