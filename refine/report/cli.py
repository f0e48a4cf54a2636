"""`refine report <what>`: write a table (and its figures) from result files.

ntp        INPUTS = eval/ntp/*.json                 OUT = ntp_table.csv
curves     INPUTS = models/*/*/final_metrics.json   OUT = training_curves.png
<suite>    INPUTS = eval/<suite>/**/scores.json     OUT = the suite's `outputs`, in order (its table first):
           niah: niah_table.csv, figures/niah_heatmaps.png, figures/niah_bars.png;
           qa: qa_table.csv, figures/qa_bars.png; longbench: longbench_table.csv, figures/longbench_bars.png
"""

from __future__ import annotations

from pathlib import Path

from refine.eval.suites import SUITES, get_suite
from refine.report import figures, tables
from refine.report.ntp import ntp_table

REPORTS = ("ntp", "curves")  # the reports that are no suite's


def report_names() -> tuple[str, ...]:
    """Every `refine report` target: ntp, curves and each registered suite."""
    return (*REPORTS, *SUITES)


def write_report(cfg: dict, what: str, inputs: list[str], outs: list[str]) -> None:
    if what not in report_names():
        raise ValueError(f"refine report: expected one of {', '.join(report_names())}, got {what!r}")
    if what in REPORTS and len(outs) != 1:
        raise ValueError(f"refine report {what}: expected 1 --out path, got {len(outs)}")
    if what == "ntp":
        tables.write_csv(ntp_table(inputs), outs[0])
    elif what == "curves":
        figures.training_curves([Path(p).parent for p in inputs], outs[0])
    else:
        get_suite(what).report(cfg, inputs, outs)
