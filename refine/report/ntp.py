"""The NTP report: held-out loss/accuracy table and training-curve figure.

Built from files only: each eval JSON (`results/eval/ntp/<model>/<run>.json`) and, beside the
evaluated model, the run's `metrics.tsv` and `final_metrics.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


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
            }
        )
    return pd.DataFrame(rows).sort_values(["model", "run"]).reset_index(drop=True)


def training_curves(run_dirs: list[Path], figure: str | Path) -> None:
    models = sorted({d.parent.name for d in run_dirs})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for run_dir in sorted(d for d in run_dirs if d.parent.name == model):
            tsv = run_dir / "metrics.tsv"
            if not tsv.exists():
                continue
            df = pd.read_csv(tsv, sep="\t")
            ax.plot(df["optimizer_steps"], df["loss"], label=run_dir.name, lw=1)
        ax.set_title(model)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)
    plt.close(fig)


def write_ntp_report(inputs: list[str | Path], table: str | Path, figure: str | Path) -> pd.DataFrame:
    df = ntp_table(inputs)
    Path(table).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(table, index=False)
    run_dirs = [Path(json.loads(Path(p).read_text())["model_dir"]).parent for p in inputs]
    training_curves(run_dirs, figure)
    return df
