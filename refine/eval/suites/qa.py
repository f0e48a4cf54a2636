"""RULER QA (SQuAD, HotpotQA; REFINE.md §4): items, the authors' substring rule, the paper's table, bars.

Score per item: 1 if a lower-cased gold answer is a substring of the output's first line
(`refine.eval.scoring.qa_substring_match`, in the authors' order), with partial credit. Table: per
dataset each context length and the mean over lengths, by stage (MidTr / PostTr / TTT). Test-time
training is evaluated on the Nested-REFINE post-trained model, as in the paper's table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refine.eval.data import read_jsonl
from refine.eval.scoring import qa_substring_match
from refine.eval.suites.base import Item, ReportOutput, Suite, register
from refine.report.tables import seed_table


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


def qa_table(runs: list[dict]):
    """Paper layout: stage (MidTr / PostTr / TTT), then per dataset each length and the mean."""
    rows = []
    for run in runs:
        m = run["metrics"]
        stage = (
            "TTT" if "+ttt" in run["method"] else ("PostTr" if run["method"].startswith("post") else "MidTr")
        )
        row = {"model": run["model"], "method": run["method"], "seed": run["seed"], "stage": stage}
        datasets = sorted({k.split("/")[0] for k in m if "/len" in k})
        for ds in datasets:
            keys = sorted((k for k in m if k.startswith(f"{ds}/len") and k.endswith("/score")),
                          key=lambda k: int(k.split("/len")[1].split("/")[0]))  # fmt: skip
            for key in keys:
                row[f"{ds}@{key.split('/len')[1].split('/')[0]}"] = m[key]
            row[f"{ds}_mean"] = float(np.mean([m[k] for k in keys]))
            for extra in ("first_token_acc", "char_acc", "answer_logprob"):
                vals = [v for k, v in m.items() if k.startswith(f"{ds}/len") and k.endswith(f"/{extra}")]
                row[f"{ds}_{extra}"] = float(np.mean(vals))
        rows.append(row)
    stages = {r["method"]: r["stage"] for r in rows}
    table = seed_table([{k: v for k, v in r.items() if k != "stage"} for r in rows])
    table.insert(2, "stage", table["method"].map(stages))
    return table


@register
class QA(Suite):
    name = "qa"
    data_files = ("qa_test.jsonl",)
    partial_credit = True
    ttt_runs = ("post-nested_refine",)
    outputs = (
        ReportOutput("table", "qa_table.csv", "Tables",
                     "RULER QA substring-match accuracy (%) per dataset and context length and their mean, by "
                     "stage (MidTr / PostTr / TTT) and method; mean and std over seeds."),
        ReportOutput("bars", "figures/qa_bars.png", "Figures",
                     "RULER QA mean accuracy per method; error bars are the standard deviation over seeds."),
    )  # fmt: skip

    def load_items(self, cfg: dict) -> list[Item]:
        return qa_items(self.data_dir(cfg) / "qa_test.jsonl")

    def score(self, item: Item, prediction: str) -> float:
        return qa_substring_match(prediction, item.answers)

    def table(self, runs: list[dict], cfg: dict):
        return qa_table(runs)

    def figures(self, runs: list[dict], table, outs: dict[str, str], cfg: dict) -> None:
        from refine.report import figures  # matplotlib: only when drawing, not when the rules import suites

        cols = [c for c in table.columns if c.endswith("_mean") and not c.endswith("_std")]
        figures.method_bars(table, cols, outs["bars"], "RULER QA (mean over lengths)")
