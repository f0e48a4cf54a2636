"""`refine report bench`: the benchmark's figure (and a Markdown table) from `refine bench`'s CSV.

One figure, one panel per measurement present in the CSV:
- update: seconds per update of each variant, per architecture (bars, ratio to NTP on top);
- trl: seconds per update of TRL's GRPOTrainer, the project's update and NTP (bars, log scale);
- decode: generated tokens/s of each decoder, per architecture (bars);
- vs_seq_len / vs_positions: seconds per update against S and c, one line per variant (log-log).
The Markdown table (an `--out` ending in `.md`) lists every row: measurement, model, variant,
S, c, median seconds, tokens/s, ratio, peak memory, the other processes' CPU, threads, commit.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from refine.bench import COLUMNS

log = logging.getLogger(__name__)

_PANELS = ("update", "trl", "decode", "vs_seq_len", "vs_positions")


def read_rows(path: str | Path) -> list[dict]:
    """The CSV's rows with numbers parsed; a missing column is a ValueError naming the file."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a `refine bench` CSV: missing column(s) {missing}")
        rows = list(reader)
    for row in rows:
        for key, value in row.items():
            if key in ("measurement", "arch", "variant", "ratio_to", "commit"):
                continue
            row[key] = float(value) if value not in ("", None) else float("nan")
    return rows


def markdown_table(rows: list[dict]) -> str:
    names = ("measurement", "model", "variant", "S", "c", "s / update", "tokens/s", "ratio", "peak MiB", "other cores",
             "threads", "commit")  # fmt: skip
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for r in rows:
        lines.append(
            f"| {r['measurement']} | {r['arch']} | {r['variant']} | {int(r['seq_len'])} | {int(r['num_positions'])} | "
            f"{r['median_s']:.3f} | {r['tokens_per_s']:,.0f} | {r['ratio']:.2f} (÷ {r['ratio_to']}) | "
            f"{r['peak_rss_delta_mib']:.0f} | {r['other_cpu_cores']:.2f} | {int(r['threads'])} | {r['commit']} |"
        )
    return "\n".join(lines) + "\n"


def _bars(ax, rows, value, title, ylabel, log_scale=False):
    groups = list(dict.fromkeys(r["arch"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        for g, arch in enumerate(groups):
            row = next((r for r in rows if r["arch"] == arch and r["variant"] == variant), None)
            if row is None:
                continue
            bar = ax.bar(g + i * width, row[value], width, color=f"C{i}", label=variant if g == 0 else None)
            ax.bar_label(bar, [f"{row['ratio']:.2f}"], fontsize=6)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    if log_scale:
        ax.set_yscale("log")
    ax.legend(fontsize=6)


def _lines(ax, rows, x, title, xlabel):
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        pts = sorted((r[x], r["median_s"]) for r in rows if r["variant"] == variant)
        ax.plot(*zip(*pts, strict=True), marker="o", color=f"C{i}", label=variant)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("s / update", fontsize=8)
    ax.legend(fontsize=6)


def bench_figure(rows: list[dict], out: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [m for m in _PANELS if any(r["measurement"] == m for r in rows)]
    if not panels:
        raise ValueError(f"no rows of {list(_PANELS)} to plot")
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, m in zip(axes.flat, panels, strict=False):
        sub = [r for r in rows if r["measurement"] == m]
        if m == "update":
            _bars(ax, sub, "median_s", "update (label: × NTP)", "s / update")
        elif m == "trl":
            _bars(ax, sub, "median_s", "TRL GRPO vs project (label: × project)", "s / update", log_scale=True)
        elif m == "decode":
            _bars(ax, sub, "tokens_per_s", "greedy decoding (label: speed-up vs generate)", "tokens / s")
        elif m == "vs_seq_len":
            _lines(ax, sub, "seq_len", f"cost vs S (c = {int(sub[0]['num_positions'])})", "S")
        else:
            _lines(ax, sub, "num_positions", f"cost vs c (S = {int(sub[0]['seq_len'])})", "c")
    threads, other = int(rows[0]["threads"]), max(r["other_cpu_cores"] for r in rows)
    fig.suptitle(f"refine bench @ {rows[0]['commit']}: {threads} threads, other processes ≤ {other:.2f} cores",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)


def write_bench_report(inputs: list[str], outs: list[str]) -> None:
    """`refine report bench --out F.png [--out T.md] CSV`: the figure (.png/.pdf/.svg) and table (.md)."""
    if len(inputs) != 1:
        raise ValueError(f"refine report bench: expected 1 input CSV, got {len(inputs)}")
    rows = read_rows(inputs[0])
    for out in outs:
        if Path(out).suffix == ".md":
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(markdown_table(rows))
        elif Path(out).suffix in (".png", ".pdf", ".svg"):
            bench_figure(rows, out)
        else:
            raise ValueError(f"refine report bench: --out {out}: expected a .png, .pdf, .svg or .md path")
        log.info("wrote %s", out)
