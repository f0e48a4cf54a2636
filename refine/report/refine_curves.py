"""The REFINE signal over training: reward and rollout exact-match rate against optimizer steps.

Reads the `metrics.tsv` of every run given (`models/<model>/<run>/`) and plots, for each run that
logged REFINE's reward statistics (`reward` column: mid-training REFINE, and any other run whose
method logs them, e.g. Nested REFINE's inner update), one panel per (metric, model):
- `reward`: the mean reward of the batch (cosine in mid-training), with a band of ± the mean
  within-group standard deviation (`reward_std`, the spread GRPO's advantages are made of);
- `rollout_exact`: the fraction of rollout tokens equal to the true continuation;
- `frac_reward_zero_std`: the fraction of groups whose rewards are all equal (no gradient).
Each seed is one thin line; the mean over seeds at each logged step is the thick line.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

PANELS = (  # (column, y label)
    ("reward", "reward (mean ± reward_std)"),
    ("rollout_exact", "rollout exact match"),
    ("frac_reward_zero_std", "groups with zero reward spread"),
)
_SEED = re.compile(r"-s\d+$")


def refine_runs(run_dirs: list[Path]) -> dict[tuple[str, str], list[tuple[str, pd.DataFrame]]]:
    """{(model, run label without seed): [(run, metrics)]} of the runs that logged a reward."""
    found = defaultdict(list)
    for run_dir in run_dirs:
        tsv = Path(run_dir) / "metrics.tsv"
        if not tsv.exists():
            continue
        df = pd.read_csv(tsv, sep="\t")
        if "reward" in df and df["reward"].notna().any():
            found[(run_dir.parent.name, _SEED.sub("", run_dir.name))].append((run_dir.name, df))
    return dict(sorted(found.items()))


def refine_curves(run_dirs: list[Path], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = refine_runs(run_dirs)
    models = sorted({m for m, _ in runs}) or ["(no REFINE runs)"]
    panels = [p for p in PANELS if any(p[0] in df for group in runs.values() for _, df in group)] or PANELS[:1]
    fig, axes = plt.subplots(len(panels), len(models), figsize=(5 * len(models), 2.6 * len(panels)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, model in enumerate(models):
        labels = [label for m, label in runs if m == model]
        for i, (col, ylabel) in enumerate(panels):
            ax = axes[i][j]
            for k, label in enumerate(labels):
                colour = colours[k % len(colours)]
                series = [df.dropna(subset=[col]) for _, df in runs[(model, label)] if col in df]
                for df in series:
                    ax.plot(df["optimizer_steps"], df[col], lw=0.6, alpha=0.5, color=colour)
                if not series:
                    continue
                mean = pd.concat(series).groupby("optimizer_steps")[col].mean()
                ax.plot(mean.index, mean.to_numpy(), lw=1.8, color=colour, label=f"{label} (n={len(series)})")
                if col == "reward" and all("reward_std" in df for df in series):
                    spread = pd.concat(series).groupby("optimizer_steps")["reward_std"].mean()
                    ax.fill_between(mean.index, (mean - spread).to_numpy(), (mean + spread).to_numpy(),
                                    color=colour, alpha=0.15, lw=0)  # fmt: skip
            ax.set_title(f"{model}: {col}", fontsize=9)
            ax.set_xlabel("optimizer step", fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
            if col in ("rollout_exact", "frac_reward_zero_std"):
                ax.set_ylim(-0.02, 1.02)
            if labels:
                ax.legend(fontsize=6)
    if not runs:
        log.warning("no run logged a reward: the REFINE curves figure is empty")
    fig.suptitle("REFINE: reward and rollout exact match over training (thin: seeds, thick: mean)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
