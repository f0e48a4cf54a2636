"""The NTP table: held-out loss / next-token accuracy with each run's tokens, steps and time.

Built from files only: each eval JSON (`results/eval/ntp/<model>/<run>.json`) and, beside the
evaluated model, the run's `final_metrics.json` and `metrics.tsv`. For REFINE runs the table
also summarises the logged rollout signal over all logged steps: the mean, minimum and maximum
rollout exact-match rate and the mean fraction of GRPO groups with zero reward spread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def ntp_table(inputs: list[str | Path]) -> pd.DataFrame:
    rows = []
    for path in inputs:
        scores = json.loads(Path(path).read_text())
        run_dir = Path(scores["model_dir"]).parent
        final_path = run_dir / "final_metrics.json"
        final = json.loads(final_path.read_text()) if final_path.exists() else {}
        rows.append(
            {
                "model": run_dir.parent.name,
                "run": run_dir.name,
                "val_loss": scores["val_loss"],
                "val_accuracy": scores["val_accuracy"],
                "train_tokens": final.get("tokens"),
                "optimizer_steps": final.get("optimizer_steps"),
                "wall_time_s": final.get("wall_time_s"),
                **_rollout_signal(run_dir / "metrics.tsv"),
            }
        )
    return pd.DataFrame(rows).sort_values(["model", "run"]).reset_index(drop=True)


def _rollout_signal(tsv: Path) -> dict[str, float]:
    if not tsv.exists():
        return {}
    df = pd.read_csv(tsv, sep="\t")
    prefix = next((p for p in ("", "inner_") if f"{p}rollout_exact" in df), None)  # nested: inner_
    if prefix is None:
        return {}
    exact = df[f"{prefix}rollout_exact"].dropna()
    return {
        "rollout_exact_mean": float(exact.mean()),
        "rollout_exact_min": float(exact.min()),
        "rollout_exact_max": float(exact.max()),
        "frac_reward_zero_std_mean": float(df[f"{prefix}frac_reward_zero_std"].dropna().mean()),
    }
