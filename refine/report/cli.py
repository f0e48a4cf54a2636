"""`refine report <what>`: write a table (and its figures) from result files.

ntp        INPUTS = eval/ntp/*.json          OUT = ntp_table.csv
curves     INPUTS = models/*/*/final_metrics.json   OUT = training_curves.png
niah       INPUTS = eval/niah/**/scores.json OUT = niah_table.csv, niah_heatmaps.png, niah_bars.png
qa         INPUTS = eval/qa/**/scores.json   OUT = qa_table.csv, qa_bars.png
longbench  INPUTS = eval/longbench/**/scores.json  OUT = longbench_table.csv, longbench_bars.png
"""

from __future__ import annotations

from pathlib import Path

from refine.report import figures, tables
from refine.report.ntp import ntp_table

EXPECTED_OUTPUTS = {"ntp": 1, "curves": 1, "niah": 3, "qa": 2, "longbench": 2}


def _csv(df, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.6g")


def write_report(cfg: dict, what: str, inputs: list[str], outs: list[str]) -> None:
    if len(outs) != EXPECTED_OUTPUTS[what]:
        raise ValueError(
            f"refine report {what}: expected {EXPECTED_OUTPUTS[what]} --out paths, got {len(outs)}"
        )
    if what == "ntp":
        _csv(ntp_table(inputs), outs[0])
    elif what == "curves":
        figures.training_curves([Path(p).parent for p in inputs], outs[0])
    elif what == "niah":
        runs = tables.load_scores(inputs)
        table = tables.niah_table(runs)
        _csv(table, outs[0])
        figures.niah_heatmaps(runs, outs[1])
        groups = [g for g in tables.NIAH_GROUPS if f"{g}_mean" in table]
        figures.method_bars(table, [f"{g}_mean" for g in groups], outs[2], "RULER NIAH (mean over lengths)")
    elif what == "qa":
        table = tables.qa_table(tables.load_scores(inputs))
        _csv(table, outs[0])
        cols = [c for c in table.columns if c.endswith("_mean") and not c.endswith("_std")]
        figures.method_bars(table, cols, outs[1], "RULER QA (mean over lengths)")
    elif what == "longbench":
        from refine.eval.suites import longbench_source_label

        label = longbench_source_label(cfg["eval"]["longbench"])
        table = tables.longbench_table(tables.load_scores(inputs), label)
        _csv(table, outs[0])
        figures.method_bars(table, ["Avg"], outs[1], f"{label}: average of the tasks")
    else:
        raise ValueError(f"refine report: unknown report {what!r}")
