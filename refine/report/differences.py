"""The differences the paper's claims are about, with paired bootstrap 95% intervals.

Comparisons (arm A − arm B, score points ×100), per model and per suite group:
- REFINE mid − SFT mid (`mid-refine` − `mid-sft`);
- REFINE mid − compute-matched SFT mid (`mid-refine` − `mid-sft_matched`);
- Nested REFINE − Nested SFT (`post-nested_refine` − `post-nested_sft`);
- TTT-REFINE − TTT-SFT (`<run>+ttt-refine` − `<run>+ttt-sft`, the same trained run: the REFINE-mid
  model on LongBench, the Nested-REFINE model on QA, as in the paper's tables).
Groups: S, MK, MQ, MV (RULER NIAH, `refine.report.tables.NIAH_GROUPS`), QA (every RULER-QA
dataset) and LongBench Avg.

The point estimate is the difference of the two arms' table values, computed from the per-item
scores of `predictions.jsonl` with the tables' weights: a NIAH group is the mean over lengths of
the mean over its variants of the cell (variant × length) means, QA the mean over datasets of the
mean over lengths, LongBench Avg the mean over tasks (the official per-task score is rounded to 2
decimals, the value here is not: they differ by < 0.01). Both arms are scored on the same items
(paired by item id; ids missing from either arm are dropped, with a warning) and the same seeds
(paired by seed: `mid-refine-s1` with `mid-sft-s1`; seeds missing from either arm are dropped).

Interval: a two-level paired bootstrap. Each replicate draws the seeds with replacement and, within
every cell, the items with replacement (one draw shared by the seeds, since every seed is scored on
the same items); the replicate statistic is the same weighted mean of the paired differences. The
95% interval is the 2.5 / 97.5 percentiles of `N_BOOTSTRAP` replicates (a fixed generator seed, so
the table is reproducible). With one seed the seed level has no spread: the interval then covers
item sampling only, and the table's `n_seeds` says so. Nothing is tuned per comparison.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from refine.eval.suites.niah import NIAH_GROUPS
from refine.names import SUITES
from refine.report.tables import load_scores

log = logging.getLogger(__name__)

N_BOOTSTRAP = 2000
SUITE_ORDER = SUITES  # refine.names
BOOTSTRAP_SEED = 0
COMPARISONS = (  # (label, arm A, arm B); "+ttt" arms are matched on the suite's TTT run
    ("REFINE mid − SFT mid", "mid-refine", "mid-sft"),
    ("REFINE mid − compute-matched SFT mid", "mid-refine", "mid-sft_matched"),
    ("Nested REFINE − Nested SFT", "post-nested_refine", "post-nested_sft"),
    ("TTT-REFINE − TTT-SFT", "+ttt-refine", "+ttt-sft"),
)
COLUMNS = ["model", "comparison", "suite", "group", "arm_a", "arm_b", "diff", "ci_low", "ci_high", "score_a",
           "score_b", "n_seeds", "n_items"]  # fmt: skip


def _group_of(suite: str, variant: str) -> str | None:
    """The table group an item's variant/dataset/task belongs to."""
    if suite == "niah":
        return next((g for g, variants in NIAH_GROUPS.items() if variant in variants), None)
    return "LongBench Avg" if suite == "longbench" else suite.upper()


def cell_weights(suite: str, cells: list[tuple[str, int]]) -> np.ndarray:
    """Weights of the cells (variant/dataset/task, length) of one group, as its table value weighs
    them: NIAH mean over lengths of the mean over variants, QA mean over datasets of the mean over
    lengths, LongBench the mean over tasks (lengths pooled). Sums to 1."""
    w = np.zeros(len(cells))
    if suite == "niah":
        by_length = defaultdict(list)
        for i, (_, length) in enumerate(cells):
            by_length[length].append(i)
        for members in by_length.values():
            w[members] = 1.0 / (len(by_length) * len(members))
    elif suite == "longbench":
        tasks = sorted({v for v, _ in cells})
        for i, _ in enumerate(cells):
            w[i] = 1.0 / len(tasks)
    else:
        by_dataset = defaultdict(list)
        for i, (dataset, _) in enumerate(cells):
            by_dataset[dataset].append(i)
        for members in by_dataset.values():
            w[members] = 1.0 / (len(by_dataset) * len(members))
    return w


def item_weights(suite: str, item_cells: list[tuple[str, int]]) -> tuple[list[np.ndarray], np.ndarray]:
    """(the item columns of each cell, each cell's weight) for items whose cells are `item_cells`."""
    cells = sorted(set(item_cells))
    if suite == "longbench":  # a task is one cell, whatever the record lengths
        cells = sorted({(v, 0) for v, _ in item_cells})
        item_cells = [(v, 0) for v, _ in item_cells]
    index = {c: k for k, c in enumerate(cells)}
    members = [[] for _ in cells]
    for i, c in enumerate(item_cells):
        members[index[c]].append(i)
    return [np.array(m) for m in members], cell_weights(suite, cells)


def paired_bootstrap(diffs: np.ndarray, members: list[np.ndarray], weights: np.ndarray,
                     n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:  # fmt: skip
    """(estimate, 2.5%, 97.5%) of Σ_c w_c · mean_{i∈c} mean_s diffs[s, i] under the two-level
    bootstrap (seeds, then items within cells). diffs: [n_seeds, n_items]."""
    n_seeds, n_items = diffs.shape
    full = np.zeros(n_items)
    for m, w in zip(members, weights, strict=True):
        full[m] = w / len(m)
    estimate = float(diffs.mean(axis=0) @ full)
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, (n_boot, n_seeds))  # [B, S]
    u = np.zeros((n_boot, n_seeds))
    np.add.at(u, (np.repeat(np.arange(n_boot), n_seeds), seed_draws.ravel()), 1.0 / n_seeds)
    v = np.zeros(n_boot * n_items)
    rows = np.arange(n_boot)[:, None] * n_items
    for m, w in zip(members, weights, strict=True):
        picks = m[rng.integers(0, len(m), (n_boot, len(m)))]  # [B, n_c] item columns
        v += np.bincount((rows + picks).ravel(), minlength=n_boot * n_items) * (w / len(m))
    stats = np.einsum("bs,sn,bn->b", u, diffs, v.reshape(n_boot, n_items))  # [B]
    low, high = np.percentile(stats, [2.5, 97.5])
    return estimate, float(low), float(high)


def _load_items(run: dict) -> dict[str, tuple[tuple[str, int], float]]:
    """{item id: ((variant, length), score)} of one evaluation (its predictions.jsonl)."""
    path = Path(run["path"]).parent / "predictions.jsonl"
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out[rec["id"]] = ((rec["group"], int(rec["length"] or 0)), float(rec["score"]))
    return out


def _arms(runs: list[dict], suite: str, model: str) -> dict[str, dict[int, dict]]:
    """{method label: {seed: items}} of one suite and model."""
    arms: dict[str, dict[int, dict]] = defaultdict(dict)
    for run in runs:
        if run["suite"] == suite and run["model"] == model:
            arms[run["method"]][run["seed"] if run["seed"] is not None else 0] = _load_items(run)
    return arms


def _resolve(arms: dict, a: str, b: str) -> list[tuple[str, str]]:
    """The (arm A, arm B) label pairs of a comparison present in `arms` (TTT: one per trained run)."""
    if a.startswith("+"):
        bases = sorted({m.split("+")[0] for m in arms if m.endswith(a)})
        return [(f"{x}{a}", f"{x}{b}") for x in bases if f"{x}{b}" in arms]
    return [(a, b)] if a in arms and b in arms else []


def difference_rows(runs: list[dict], n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                    comparisons=COMPARISONS, warn: Callable[[str], None] = log.warning) -> list[dict]:  # fmt: skip
    """One row per model × comparison × suite group (in that order), see the module docstring."""
    rows = []
    suites = sorted({r["suite"] for r in runs}, key=lambda s: (SUITE_ORDER.index(s) if s in SUITE_ORDER else 99, s))
    for model in sorted({r["model"] for r in runs}):
        arms = {suite: _arms(runs, suite, model) for suite in suites}
        for label, a, b in comparisons:
            for suite in suites:
                for arm_a, arm_b in _resolve(arms[suite], a, b):
                    rows += _comparison_rows(model, suite, label, arm_a, arm_b, arms[suite], n_boot, seed, warn)
    return rows


def _comparison_rows(model, suite, label, arm_a, arm_b, arms, n_boot, seed, warn) -> list[dict]:
    seeds = sorted(set(arms[arm_a]) & set(arms[arm_b]))
    dropped = sorted(set(arms[arm_a]) ^ set(arms[arm_b]))
    if dropped:
        warn(f"{model} {suite} {arm_a} vs {arm_b}: seeds {dropped} are in one arm only; dropped")
    if not seeds:
        return []
    ids = set.intersection(*(set(arms[arm][s]) for arm in (arm_a, arm_b) for s in seeds))
    every = set.union(*(set(arms[arm][s]) for arm in (arm_a, arm_b) for s in seeds))
    if len(ids) < len(every):
        warn(f"{model} {suite} {arm_a} vs {arm_b}: {len(every) - len(ids)} items not scored in every run; dropped")
    ref = arms[arm_a][seeds[0]]
    by_group = defaultdict(list)
    for item_id in sorted(ids):
        group = _group_of(suite, ref[item_id][0][0])
        if group is not None:
            by_group[group].append(item_id)
    order = list(NIAH_GROUPS) if suite == "niah" else sorted(by_group)
    rows = []
    for group in [g for g in order if g in by_group]:
        items = by_group[group]
        score = {arm: np.array([[arms[arm][s][i][1] for i in items] for s in seeds]) for arm in (arm_a, arm_b)}
        members, weights = item_weights(suite, [ref[i][0] for i in items])
        diff, low, high = paired_bootstrap(100 * (score[arm_a] - score[arm_b]), members, weights, n_boot, seed)
        point = {arm: paired_bootstrap(100 * score[arm], members, weights, 1, seed)[0] for arm in (arm_a, arm_b)}
        rows.append({"model": model, "comparison": label, "suite": suite, "group": group, "arm_a": arm_a,
                     "arm_b": arm_b, "diff": diff, "ci_low": low, "ci_high": high, "score_a": point[arm_a],
                     "score_b": point[arm_b], "n_seeds": len(seeds), "n_items": len(items)})  # fmt: skip
    return rows


def differences_table(score_paths: list[str | Path], n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED):
    """The table of every comparison × group with its interval, from the suites' scores.json files."""
    rows = difference_rows(load_scores(score_paths), n_boot, seed)
    return pd.DataFrame(rows, columns=COLUMNS)


def forest_plot(table: pd.DataFrame, path: str | Path) -> None:
    """One panel per model: each comparison × group a point (the difference) and its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(table["model"])) or ["(no comparisons)"]
    labels = [c[0] for c in COMPARISONS]
    n_rows = max(1, max((len(table[table["model"] == m]) for m in models), default=1))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 0.3 * n_rows + 2.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, model in zip(axes[0], models, strict=True):
        sub = table[table["model"] == model].reset_index(drop=True)
        y = np.arange(len(sub))[::-1]
        for k, label in enumerate(labels):
            mask = (sub["comparison"] == label).to_numpy()
            if mask.any():
                err = [sub["diff"][mask] - sub["ci_low"][mask], sub["ci_high"][mask] - sub["diff"][mask]]
                ax.errorbar(sub["diff"][mask], y[mask], xerr=err, fmt="o", ms=4, capsize=2,
                            color=colours[k % len(colours)], label=label)  # fmt: skip
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, list(sub["group"]), fontsize=7)
        ax.set_xlabel("difference A − B (score points, 95% paired bootstrap CI)", fontsize=8)
        ax.set_title(model, fontsize=9)
        ax.grid(axis="x", lw=0.3, alpha=0.5)
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=7, frameon=False)
    fig.suptitle("Differences between methods per suite group (A − B, 95% paired bootstrap intervals)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
