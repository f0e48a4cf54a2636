"""`refine report <what>`: write a table (and its figures) from result files.

ntp        INPUTS = eval/ntp/*.json                 OUT = ntp_table.csv
curves     INPUTS = models/*/*/final_metrics.json   OUT = training_curves.png
refine_curves INPUTS = models/*/*/final_metrics.json OUT = refine_curves.png (reward, rollout exact match)
differences INPUTS = eval/*/**/scores.json        OUT = differences_table.csv, figures/differences_forest.png
<suite>    INPUTS = eval/<suite>/**/scores.json     OUT = the suite's `outputs`, in order (its table first):
           niah: niah_table.csv, figures/niah_heatmaps.png, figures/niah_bars.png;
           qa: qa_table.csv, figures/qa_bars.png; longbench: longbench_table.csv, figures/longbench_bars.png
"""

from __future__ import annotations

from pathlib import Path

from refine.eval.suites import SUITES, get_suite
from refine.report import figures, tables
from refine.report.ntp import ntp_table

REPORTS = {"ntp": 1, "curves": 1, "refine_curves": 1, "differences": 2}  # the reports that are no suite's: outs


def report_names() -> tuple[str, ...]:
    """Every `refine report` target: ntp, curves and each registered suite."""
    return (*REPORTS, *SUITES)


def write_report(cfg: dict, what: str, inputs: list[str], outs: list[str]) -> None:
    if what not in report_names():
        raise ValueError(f"refine report: expected one of {', '.join(report_names())}, got {what!r}")
    if what in REPORTS and len(outs) != REPORTS[what]:
        raise ValueError(f"refine report {what}: expected {REPORTS[what]} --out path(s), got {len(outs)}")
    if what == "ntp":
        tables.write_csv(ntp_table(inputs), outs[0])
    elif what == "curves":
        figures.training_curves([Path(p).parent for p in inputs], outs[0])
    elif what == "refine_curves":
        from refine.report.refine_curves import refine_curves

        refine_curves([Path(p).parent for p in inputs], outs[0])
    elif what == "differences":
        from refine.report.differences import differences_table, forest_plot

        table = differences_table(inputs)
        tables.write_csv(table, outs[0])
        forest_plot(table, outs[1])
    else:
        get_suite(what).report(cfg, inputs, outs)
