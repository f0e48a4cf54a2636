"""The study's figures (matplotlib, Agg): NIAH heatmaps, method bars with seed error bars, curves."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DEPTH_BINS = np.array([0, 20, 40, 60, 80, 100.01])


def _save(fig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def niah_heatmaps(runs: list[dict], path: str | Path) -> None:
    """Depth × length accuracy (all variants pooled, seeds pooled), one panel per model × method."""
    cells: dict[tuple[str, str], dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    lengths = set()
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
    panels = sorted(cells)
    lengths = sorted(lengths)
    cols = min(4, max(1, len(panels)))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, panels, strict=False):
        grid = np.full((len(DEPTH_BINS) - 1, len(lengths)), np.nan)
        for (b, length), scores in cells[key].items():
            grid[b, lengths.index(length)] = 100 * np.mean(scores)
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto", origin="lower")
        ax.set_xticks(range(len(lengths)), [str(x) for x in lengths], fontsize=7)
        ax.set_yticks(range(len(DEPTH_BINS) - 1), [f"{int(d)}" for d in DEPTH_BINS[:-1]], fontsize=7)
        ax.set_title(f"{key[0]} {key[1]}", fontsize=8)
        ax.set_xlabel("context length (tokens)", fontsize=7)
        ax.set_ylabel("needle depth (%)", fontsize=7)
    if panels:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="accuracy (%)")
    fig.suptitle("RULER NIAH accuracy by needle depth and context length")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def method_bars(table: pd.DataFrame, columns: list[str], path: str | Path, title: str) -> None:
    """Bars of `columns` per method (mean over seeds, error bars = std over seeds), one panel per model."""
    models = list(dict.fromkeys(table["model"]))
    panel_width = max(5.0, 1.2 * len(table) / max(1, len(models)))
    fig, axes = plt.subplots(1, len(models), figsize=(panel_width * len(models), 3.6), squeeze=False)
    width = 0.8 / max(1, len(columns))
    for ax, model in zip(axes[0], models, strict=True):
        sub = table[table["model"] == model].reset_index(drop=True)
        x = np.arange(len(sub))
        for i, col in enumerate(columns):
            std = sub[f"{col}_std"] if f"{col}_std" in sub else None
            ax.bar(x + i * width, sub[col], width, yerr=std, capsize=2, label=col)
        ax.set_xticks(x + width * (len(columns) - 1) / 2, sub["method"], rotation=35, ha="right", fontsize=7)
        ax.set_title(model)
        ax.set_ylabel("score (%)")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)


CURVE_PANELS = (  # (title, run-name prefix, metric)
    ("pretraining loss", "base", "loss"),
    ("mid-training loss", "mid-", "loss"),
    ("post-training loss", "post-", "loss"),
    ("REFINE reward (mid)", "mid-refine", "reward"),
    ("REFINE rollout exact match (mid)", "mid-refine", "rollout_exact"),
)


def training_curves(run_dirs: list[Path], path: str | Path) -> None:
    """One row per panel of CURVE_PANELS, one column per model: the logged metric of every
    matching run against optimizer steps."""
    by_model = defaultdict(list)
    for run_dir in run_dirs:
        tsv = run_dir / "metrics.tsv"
        if tsv.exists():
            by_model[run_dir.parent.name].append((run_dir.name, pd.read_csv(tsv, sep="\t")))
    models = sorted(by_model)
    runs = [(name, df) for model_runs in by_model.values() for name, df in model_runs]
    panels = [p for p in CURVE_PANELS if any(name.startswith(p[1]) and p[2] in df for name, df in runs)]
    fig, axes = plt.subplots(max(1, len(panels)), max(1, len(models)),
                             figsize=(5 * max(1, len(models)), 2.8 * max(1, len(panels))), squeeze=False)  # fmt: skip
    for j, model in enumerate(models):
        for i, (title, prefix, metric) in enumerate(panels):
            ax = axes[i][j]
            for name, df in sorted(by_model[model]):
                if name.startswith(prefix) and metric in df:
                    ax.plot(df["optimizer_steps"], df[metric], lw=1, label=name)
            ax.set_title(f"{model}: {title}", fontsize=9)
            ax.set_xlabel("optimizer step", fontsize=8)
            if metric == "loss":
                ax.set_yscale("log")
            ax.legend(fontsize=6)
    _save(fig, path)
