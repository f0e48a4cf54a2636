"""Markdown tables of a finished study for the README, read from its CSVs (nothing typed by hand).

    python tools/readme_tables.py results > /tmp/study_tables.md
    python tools/readme_tables.py results --replica "base seed 1=results/base-s1"

Prints the NIAH table (S per length, MK / MQ / MV means), RULER QA, the LongBench-format Avg with
the tasks that score above 0 in some row, held-out NTP, the differences with their paired bootstrap
95% intervals, and the LaCT fast-weight ablation (S on / off per length). A cell is `mean ± std`
over seeds, or the mean alone when the std is 0. Each `--replica LABEL=DIR` (the same study with other
pretraining seeds) adds its differences beside the main run's, one row per model, comparison and run.
"""

import argparse
import logging
import re
import sys
from pathlib import Path

import pandas as pd

log = logging.getLogger("readme_tables")
METHODS = {
    "base": "base",
    "mid-sft": "NTP-SFT mid",
    "mid-sft_matched": "SFT mid, compute-matched",
    "mid-refine": "REFINE mid",
    "post-sft": "SFT post",
    "post-nested_sft": "Nested SFT post",
    "post-nested_refine": "Nested REFINE post",
}


def cell(row: pd.Series, column: str, digits: int = 1) -> str:
    mean, std = row[column], row.get(f"{column}_std", 0.0)
    if pd.isna(mean):
        return "—"
    text = f"{mean:.{digits}f}"
    return text if pd.isna(std) or round(std, digits) == 0 else f"{text} ± {std:.{digits}f}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def label(method: str) -> str:
    """The README's name of a table's method (`post-nested_refine+ttt-sft`: a TTT arm on that model)."""
    if "+ttt-" in method:
        model, mode = method.split("+ttt-")
        return f"{METHODS.get(model, model)} + TTT-{'REFINE' if mode == 'refine' else mode.upper()}"
    return METHODS.get(method, method)


def niah(results: Path) -> str:
    table = pd.read_csv(results / "niah_table.csv")
    lengths = sorted({int(m.group(1)) for c in table.columns if (m := re.fullmatch(r"S@(\d+)", c))})
    header = ["model", "method", *[f"S@{n}" for n in lengths], "MK mean", "MQ mean", "MV mean"]
    rows = [[r.model, label(r.method), *[cell(r, f"S@{n}") for n in lengths],
             *[cell(r, f"{g}_mean") for g in ("MK", "MQ", "MV")]] for _, r in table.iterrows()]  # fmt: skip
    return markdown(header, rows)


def qa(results: Path) -> str:
    table = pd.read_csv(results / "qa_table.csv")
    cols = [c for c in table.columns if re.fullmatch(r".+@\d+", c)]
    means = [c for c in table.columns if c.endswith("_mean")]
    header = ["model", "method", "stage", *cols, *means]
    rows = [[r.model, label(r.method), r.stage, *[cell(r, c) for c in cols + means]] for _, r in table.iterrows()]
    return markdown(header, rows)


def longbench(results: Path) -> str:
    table = pd.read_csv(results / "longbench_table.csv")
    skip = {"model", "method", "source", "n_seeds", "Avg"}
    tasks = [c for c in table.columns if c not in skip and not c.endswith("_std")]
    live = [t for t in tasks if (table[t] > 0).any()]
    dead = [t for t in tasks if t not in live]
    header = ["model", "method", "Avg", *live]
    rows = [[r.model, label(r.method), cell(r, "Avg"), *[cell(r, t) for t in live]] for _, r in table.iterrows()]
    return markdown(header, rows) + f"\n\nTasks at 0 in every row: {', '.join(dead) or 'none'}."


def ntp(results: Path) -> str:
    table = pd.read_csv(results / "ntp_table.csv")
    table["arm"] = table["run"].str.replace(r"-s\d+$", "", regex=True)
    grouped = table.groupby(["model", "arm"], sort=False)
    rows = []
    for (model, arm), g in grouped:
        loss = f"{g.val_loss.mean():.3f}" + (f" ± {g.val_loss.std():.3f}" if len(g) > 1 else "")
        rows.append([model, label(arm), len(g), loss, f"{100 * g.val_accuracy.mean():.1f}",
                     int(g.optimizer_steps.iloc[0]), f"{g.wall_time_s.mean() / 60:.1f}"])  # fmt: skip
    return markdown(["model", "run", "seeds", "held-out loss", "next-token acc %", "steps", "train min"], rows)


def differences(results: Path) -> str:
    """One row per model and comparison, one column per suite group: `diff [low, high]` in points."""
    table = pd.read_csv(results / "differences_table.csv")
    groups = list(dict.fromkeys(table.group))
    rows = []
    for (model, comparison), g in table.groupby(["model", "comparison"], sort=False):
        by_group = {r.group: f"{r['diff']:+.1f} [{r.ci_low:+.1f}, {r.ci_high:+.1f}]" for _, r in g.iterrows()}
        rows.append([model, comparison, *[by_group.get(group, "—") for group in groups]])
    return markdown(["model", "difference", *groups], rows)


def differences_across(runs: list[tuple[str, Path]]) -> str:
    """The differences of several runs of the study (label, results dir), one row per model,
    comparison and run, so a reader sees whether a conclusion holds across pretraining seeds."""
    tables = [(name, pd.read_csv(path / "differences_table.csv")) for name, path in runs]
    groups = list(dict.fromkeys(g for _, t in tables for g in t.group))
    keys = list(dict.fromkeys((r.model, r.comparison) for _, t in tables for _, r in t.iterrows()))
    rows = []
    for model, comparison in keys:
        for name, t in tables:
            g = t[(t.model == model) & (t.comparison == comparison)]
            by_group = {r.group: f"{r['diff']:+.1f} [{r.ci_low:+.1f}, {r.ci_high:+.1f}]" for _, r in g.iterrows()}
            rows.append([model, comparison, name, *[by_group.get(group, "—") for group in groups]])
    return markdown(["model", "difference", "run", *groups], rows)


def ablation(results: Path) -> str:
    table = pd.read_csv(results / "ablation_table.csv")
    groups = table[table.variant.isin(["S", "MK", "MQ", "MV"])]
    rows = [[r.model, r.run, r.variant, r.length, f"{r.on:.0f}", f"{r.off:.0f}", f"{r.difference:+.0f}",
             "yes" if r.beyond_window else "no"] for _, r in groups.iterrows()]  # fmt: skip
    return markdown(["model", "run", "group", "length", "updates on", "updates off", "on − off", "beyond window"], rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path, help="the study's results directory")
    p.add_argument("--replica", action="append", default=[], metavar="LABEL=DIR",
                   help="another run of the study (other pretraining seeds): its differences beside the main run's")
    args = p.parse_args(argv)
    replicas = []
    for spec in args.replica:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            p.error(f"--replica: expected LABEL=DIR, got {spec!r}")
        replicas.append((name, Path(path)))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for title, build in [("NIAH", niah), ("RULER QA", qa), ("LongBench-format", longbench), ("NTP", ntp),
                         ("Differences", differences), ("Fast-weight ablation", ablation)]:  # fmt: skip
        try:
            sys.stdout.write(f"### {title}\n\n{build(args.results)}\n\n")
        except FileNotFoundError as err:
            log.warning("%s: %s", title, err)
    if replicas:
        runs = [("main run", args.results), *replicas]
        sys.stdout.write(f"### Differences across runs\n\n{differences_across(runs)}\n\n")


if __name__ == "__main__":
    main()
