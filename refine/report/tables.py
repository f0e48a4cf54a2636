"""What every table of the study shares: evaluation files (`scores.json`) read as runs, seeds aggregated.

Each suite's own layout is its `table` (`refine.eval.suites`).

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


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.6g")
