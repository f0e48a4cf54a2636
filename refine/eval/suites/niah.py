"""RULER needle-in-a-haystack (REFINE.md §4): items, RULER's scorer, the paper's table, heatmaps and bars.

Score per item: RULER's string_match_all (the fraction of gold values found in the output), with
partial credit for small models. Table: the paper's groups S (single 1-3), MK (multikey 1-3), MQ and
MV per context length and their mean over lengths (REFINE.md §5). Heatmaps: accuracy by needle depth
and context length, one panel per model × method, one colour scale (0-100 %) for every panel.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from refine.eval.data import read_jsonl
from refine.eval.scoring import string_match_all
from refine.eval.suites.base import Item, ReportOutput, Suite, register
from refine.report.tables import seed_table

# RULER NIAH groups of the paper's table (REFINE.md §5).
NIAH_GROUPS = {
    "S": ("niah_single_1", "niah_single_2", "niah_single_3"),
    "MK": ("niah_multikey_1", "niah_multikey_2", "niah_multikey_3"),
    "MQ": ("niah_multiquery",),
    "MV": ("niah_multivalue",),
}
DEPTH_BINS = np.array([0, 20, 40, 60, 80, 100.01])


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


def niah_table(runs: list[dict]):
    """Paper layout: S / MK / MQ / MV per length and their mean over lengths, plus partial credit."""
    rows = []
    for run in runs:
        m = run["metrics"]
        lengths = sorted({int(k.split("/len")[1].split("/")[0]) for k in m if "/len" in k})
        row = {"model": run["model"], "method": run["method"], "seed": run["seed"]}
        for group, variants in NIAH_GROUPS.items():
            present = [v for v in variants if f"{v}/score" in m]
            if not present:
                continue
            cells = [(v, length) for length in lengths for v in present if f"{v}/len{length}/score" in m]
            group_lengths = sorted({length for _, length in cells})
            for length in group_lengths:  # lengths too short for a variant's needles have no cell
                row[f"{group}@{length}"] = float(
                    np.mean([m[f"{v}/len{length}/score"] for v, cell_len in cells if cell_len == length])
                )
            row[f"{group}_mean"] = float(np.mean([row[f"{group}@{length}"] for length in group_lengths]))
            for extra in ("first_token_acc", "char_acc", "answer_logprob"):
                row[f"{group}_{extra}"] = float(np.mean([m[f"{v}/len{length}/{extra}"] for v, length in cells]))
        rows.append(row)
    return seed_table(rows)


def depth_length_grids(runs: list[dict]) -> tuple[dict[tuple[str, str], np.ndarray], list[int]]:
    """Accuracy (%) per (depth bin, context length) from each run's predictions.jsonl, all variants and
    seeds pooled: {(model, method): [len(DEPTH_BINS) - 1, len(lengths)] array (NaN: no item)}, lengths."""
    cells: dict[tuple[str, str], dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    lengths: set[int] = set()
    for run in runs:
        pred_path = Path(run["path"]).parent / "predictions.jsonl"
        for line in pred_path.read_text().splitlines():
            rec = json.loads(line)
            depth = rec["depth"]
            if isinstance(depth, list):  # several needles: the mean depth
                depth = float(np.mean(depth)) if depth else None
            if depth is None:
                continue
            b = int(np.clip(np.searchsorted(DEPTH_BINS, depth, side="right") - 1, 0, len(DEPTH_BINS) - 2))
            cells[(run["model"], run["method"])][(b, rec["length"])].append(rec["score"])
            lengths.add(rec["length"])
    ordered = sorted(lengths)
    grids = {}
    for key in sorted(cells):
        grid = np.full((len(DEPTH_BINS) - 1, len(ordered)), np.nan)
        for (b, length), scores in cells[key].items():
            grid[b, ordered.index(length)] = 100 * np.mean(scores)
        grids[key] = grid
    return grids, ordered


@register
class NIAH(Suite):
    name = "niah"
    data_files = ("niah.jsonl",)
    partial_credit = True
    outputs = (
        ReportOutput("table", "niah_table.csv", "Tables",
                     "RULER needle-in-a-haystack accuracy (%) in the paper's layout: S (single 1-3), MK "
                     "(multikey 1-3), MQ, MV per context length and their mean over lengths; mean and std over "
                     "seeds (``_std``, ``n_seeds``), with partial-credit columns (first-token accuracy, "
                     "per-character accuracy, answer log-probability)."),
        ReportOutput("heatmaps", "figures/niah_heatmaps.png", "Figures",
                     "NIAH accuracy by needle depth (rows) and context length (columns), all variants and seeds "
                     "pooled, one panel per model and method, one colour scale (0-100 %) for every panel."),
        ReportOutput("bars", "figures/niah_bars.png", "Figures",
                     "NIAH mean accuracy per group and method; error bars are the standard deviation over seeds."),
    )  # fmt: skip

    def load_items(self, cfg: dict) -> list[Item]:
        return niah_items(self.data_dir(cfg) / "niah.jsonl")

    def score(self, item: Item, prediction: str) -> float:
        return string_match_all(prediction, item.answers)

    def table(self, runs: list[dict], cfg: dict):
        return niah_table(runs)

    def figures(self, runs: list[dict], table, outs: dict[str, str], cfg: dict) -> None:
        from refine.report import figures  # matplotlib: only when drawing, not when the rules import suites

        grids, lengths = depth_length_grids(runs)
        figures.heatmaps({f"{model} {method}": grid for (model, method), grid in grids.items()},
                         [str(x) for x in lengths], [f"{int(d)}" for d in DEPTH_BINS[:-1]], outs["heatmaps"],
                         title="RULER NIAH accuracy by needle depth and context length",
                         xlabel="context length (tokens)", ylabel="needle depth (%)", label="accuracy (%)")  # fmt: skip
        groups = [g for g in NIAH_GROUPS if f"{g}_mean" in table]
        figures.method_bars(table, [f"{g}_mean" for g in groups], outs["bars"], "RULER NIAH (mean over lengths)")
