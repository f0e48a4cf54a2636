"""Evaluation suites, one module each, registered by name (`refine.eval.suites.base` says what a suite is).

`SUITES` maps each name to its suite, in table order: RULER NIAH (`niah`), RULER QA (`qa`) and
LongBench (`longbench`). `load_items(cfg, name)` and `score_item(name, item, prediction)` are the
registry's shortcuts.
"""

import importlib

from refine.eval.suites.base import PARTIAL_CREDIT, SUITES, Item, ReportOutput, Suite, get_suite, register
from refine.names import SUITES as NAMES

MODULES = NAMES  # refine.names.SUITES; importing a suite's module registers it: this is the table order
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")

from refine.eval.suites.longbench import longbench_items, longbench_source_label, select_subset  # noqa: E402
from refine.eval.suites.niah import niah_items  # noqa: E402
from refine.eval.suites.qa import qa_items  # noqa: E402

__all__ = ["PARTIAL_CREDIT", "SUITES", "Item", "ReportOutput", "Suite", "get_suite", "register", "load_items",
           "score_item", "niah_items", "qa_items", "longbench_items", "longbench_source_label",
           "select_subset"]  # fmt: skip


def load_items(cfg: dict, suite: str) -> list[Item]:
    """All items of `suite` for the study `cfg` (evaluation data written by `refine eval-data`)."""
    return get_suite(suite).load_items(cfg)


def score_item(suite: str, item: Item, prediction: str) -> float:
    return get_suite(suite).score(item, prediction)
