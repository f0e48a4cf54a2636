"""The study's figure kinds (matplotlib, Agg): heatmap panels on one colour scale, method bars with seed error
bars, training curves. Each suite picks the kinds it draws (`refine.eval.suites`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402


def _save(fig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heatmap_figure(grids: dict[str, np.ndarray], xticks: list[str], yticks: list[str], *, title: str = "",
                   xlabel: str = "", ylabel: str = "", label: str = "", vmin: float = 0.0, vmax: float = 100.0):
    """One panel per entry of `grids` (title -> [len(yticks), len(xticks)] array; NaN: no data), up to 4
    per row, all drawn on one colour scale `vmin`..`vmax` with one colour bar, so panels compare by eye."""
    panels = list(grids)
    cols = min(4, max(1, len(panels)))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    norm = Normalize(vmin=vmin, vmax=vmax)  # one norm object shared by every panel
    for ax, key in zip(axes.flat, panels, strict=False):
        ax.imshow(grids[key], norm=norm, cmap="RdYlGn", aspect="auto", origin="lower")
        ax.set_xticks(range(len(xticks)), xticks, fontsize=7)
        ax.set_yticks(range(len(yticks)), yticks, fontsize=7)
        ax.set_title(key, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
    if panels:
        fig.colorbar(ScalarMappable(norm=norm, cmap="RdYlGn"), ax=axes.ravel().tolist(), shrink=0.6,
                     label=label)  # fmt: skip
    fig.suptitle(title)
    return fig


def heatmaps(grids: dict[str, np.ndarray], xticks: list[str], yticks: list[str], path: str | Path, **kwargs) -> None:
    """`heatmap_figure` saved to `path` (its constrained layout keeps room for the shared colour bar)."""
    fig = heatmap_figure(grids, xticks, yticks, **kwargs)
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
