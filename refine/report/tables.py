"""The paper's tables from the evaluation files (`scores.json`), as pandas DataFrames.

Every table is built from files only; each `scores.json` holds the flat metrics that were also
logged to MLflow for that run, so a table cell is the mean over seeds of MLflow values.

Rows are (model, method) where the method label comes from the run directory and the TTT mode:
`base`, `mid-sft`, `mid-sft_matched`, `mid-refine`, `post-<method>` (on the REFINE-mid model),
and `<label>+ttt-<mode>`. Seeds (`-s<N>` suffix) are aggregated: each value column has a `_std`
twin (sample std over seeds; 0 with one seed) and `n_seeds` counts them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

# RULER NIAH groups of the paper's table (REFINE.md §5).
NIAH_GROUPS = {
    "S": ("niah_single_1", "niah_single_2", "niah_single_3"),
    "MK": ("niah_multikey_1", "niah_multikey_2", "niah_multikey_3"),
    "MQ": ("niah_multiquery",),
    "MV": ("niah_multivalue",),
}
METHOD_ORDER = ["base", "mid-sft", "mid-sft_matched", "mid-refine", "post-sft", "post-nested_sft",
                "post-nested_refine"]  # fmt: skip
_SEED = re.compile(r"-s(\d+)$")


def load_scores(paths: list[str | Path]) -> list[dict]:
    runs = []
    for path in paths:
        rec = json.loads(Path(path).read_text())
        run = rec["run"]
        match = _SEED.search(run)
        label = _SEED.sub("", run)
        if rec.get("ttt", "none") != "none":
            label = f"{label}+ttt-{rec['ttt']}"
        runs.append(
            {**rec, "method": label, "seed": int(match.group(1)) if match else None, "path": str(path)}
        )
    return runs


def _method_key(method: str) -> tuple:
    base, _, ttt = method.partition("+")
    rank = METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER)
    return (rank, base, ttt)


def seed_table(rows: list[dict]) -> pd.DataFrame:
    """rows: {model, method, seed, <value columns>} → one row per (model, method): mean, _std, n_seeds."""
    df = pd.DataFrame(rows)
    value_cols = [c for c in df.columns if c not in ("model", "method", "seed")]
    out = []
    for (model, method), group in df.groupby(["model", "method"], sort=False):
        row = {"model": model, "method": method, "n_seeds": len(group)}
        for col in value_cols:
            values = group[col].astype(float).to_numpy()
            row[col] = float(np.mean(values))
            row[f"{col}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out.append(row)
    table = pd.DataFrame(out)
    order = sorted(range(len(table)), key=lambda i: (table["model"][i], _method_key(table["method"][i])))
    return table.iloc[order].reset_index(drop=True)


def niah_table(runs: list[dict]) -> pd.DataFrame:
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


def qa_table(runs: list[dict]) -> pd.DataFrame:
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


def longbench_table(runs: list[dict], source: str) -> pd.DataFrame:
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
