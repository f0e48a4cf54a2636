"""The update-cost benchmark writes its CSV with every column and finite values (no timing asserts)."""

import csv
import math

from refine.bench import COLUMNS, VARIANTS, run_bench

TINY = {
    "delta_net": {"hidden_size": 32, "num_hidden_layers": 1, "num_heads": 2},
    "lact": {"hidden_size": 32, "num_hidden_layers": 1, "window_size": 16, "lact_chunk_size": 16},
}


def test_quick_bench_writes_the_csv(tmp_path):
    out = tmp_path / "bench" / "update_cost.csv"
    rows = run_bench(
        ["delta_net", "lact"], seq_len=64, batch_size=2, num_positions=3, rollout_len=3, repeats=1,
        out_csv=out, margin=8, vocab_size=50, overrides=TINY,
    )
    with out.open() as f:
        read = list(csv.DictReader(f))
    assert tuple(read[0].keys()) == COLUMNS
    assert [(r["arch"], r["variant"]) for r in read] == [(a, v) for a in TINY for v in VARIANTS]
    for row in read:
        for column in COLUMNS[8:]:
            assert math.isfinite(float(row[column])), column
        assert float(row["median_s"]) > 0
    ntp = [r for r in rows if r["variant"] == "ntp"]
    assert all(r["ratio_vs_ntp"] == 1.0 for r in ntp)
