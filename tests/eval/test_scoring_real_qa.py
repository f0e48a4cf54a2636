"""RULER QA scoring on the authors' real SQuAD items (../shared/data/ruler_qa; skipped where absent).

Predictions are built from each item's gold answers with the output shapes the pipeline's newline stop
does not prevent (a leading newline, a tab or carriage return before the answer), and scored against
the authors' rule as written in ReFINE verl/verl/utils/reward_score/ruler.py (first line of the raw
output, then strip and map control characters, then a lower-cased substring test).
"""

from pathlib import Path

import pytest

from refine.data.ruler_qa import read_qa_records
from refine.eval.scoring import qa_substring_match

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ruler_qa"
FILE = SHARED / "ruler_squadqa_delta_net_4096_200_test.parquet"


@pytest.fixture(scope="module")
def records():
    if not FILE.exists():
        pytest.skip(f"{FILE} not present (real data only where ../shared/data exists)")
    return read_qa_records(FILE)


def test_real_items_score_in_the_authors_order(records):
    assert len(records) == 200
    shapes = {
        "plain": (lambda a: f" {a}\nQuestion: next", 1.0),
        "leading_newline": (lambda a: f"\n{a}", 0.0),
        "tab_before": (lambda a: f"It is\t{a}", 1.0),
        "carriage_return_before": (lambda a: f"It is\r{a}", 1.0),
        "second_line": (lambda a: f"unsure\n{a}", 0.0),
    }
    for name, (make, expected) in shapes.items():
        scores = [qa_substring_match(make(r["outputs"][0]), r["outputs"]) for r in records]
        assert scores == [expected] * len(records), name
    # an output naming another item's answer only scores where that answer is one of the item's own
    upper = [qa_substring_match(r["outputs"][0].upper(), r["outputs"]) for r in records]
    assert upper == [1.0] * len(records)  # case-insensitive
