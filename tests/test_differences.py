"""Differences with paired bootstrap intervals (issue 16, item 3), on synthetic predictions whose true
difference is known: the interval covers it, covers 0 when there is none, excludes 0 for a real
shift; items are paired by id, seeds by seed, and the point estimate is the tables' difference."""

import json
import random

import numpy as np
import pandas as pd
import pytest

from refine.report.differences import differences_table, item_weights, paired_bootstrap

S_VARIANTS = ("niah_single_1", "niah_single_2", "niah_single_3")
LENGTHS = (256, 512)


def write_eval(root, suite, model, run, items, ttt="none", shuffle=False):
    """One evaluation in the pipeline's layout: predictions.jsonl (id, group, length, score) + scores.json."""
    out = root / "eval" / suite / model / run / f"ttt-{ttt}"
    out.mkdir(parents=True)
    lines = [json.dumps({"id": i, "group": g, "length": n, "depth": None, "answers": ["x"], "prediction": "",
                         "score": float(s)}) for i, g, n, s in items]  # fmt: skip
    if shuffle:
        random.Random(0).shuffle(lines)
    (out / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    rec = {"suite": suite, "ttt": ttt, "model": model, "run": run, "metrics": {}}
    (out / "scores.json").write_text(json.dumps(rec))
    return out / "scores.json"


def niah_items(rng, p, n=60, variants=S_VARIANTS):
    """Items of every (variant, length) cell, each scored 1 with probability p[(variant, length)] (or p)."""
    sizes = {v: n if isinstance(n, int) else n[v] for v in variants}
    return [(f"{v}/{length}/{k}", v, length, rng.random() < (p[(v, length)] if isinstance(p, dict) else p))
            for v in variants for length in LENGTHS for k in range(sizes[v])]  # fmt: skip


def table_value(items):
    """The NIAH table's S value: mean over lengths of the mean over variants of the cell means (×100)."""
    df = pd.DataFrame(items, columns=["id", "group", "length", "score"]).astype({"score": float})
    cells = df.groupby(["length", "group"])["score"].mean()
    return 100 * cells.groupby(level="length").mean().mean()


def row(table, comparison, group="S"):
    sel = table[(table["comparison"] == comparison) & (table["group"] == group)]
    assert len(sel) == 1, table
    return sel.iloc[0]


def test_a_known_difference_is_covered_and_0_is_excluded_and_the_estimate_is_the_tables(tmp_path):
    rng = np.random.default_rng(1)
    paths, a_items, b_items = [], [], []
    uneven = {(v, n): 0.3 + 0.1 * i + 0.2 * (n == 256) for i, v in enumerate(S_VARIANTS) for n in LENGTHS}
    for seed in range(3):
        b = niah_items(rng, uneven, n=dict(zip(S_VARIANTS, (90, 60, 30), strict=True)))  # cells of unequal size
        a = [(i, g, n, s if rng.random() > 0.25 else 1.0) for i, g, n, s in b]  # + 25% of the misses
        paths += [write_eval(tmp_path, "niah", "m", f"mid-refine-s{seed}", a),
                  write_eval(tmp_path, "niah", "m", f"mid-sft-s{seed}", b)]  # fmt: skip
        a_items.append(a)
        b_items.append(b)
    r = row(differences_table(paths, n_boot=1000), "REFINE mid − SFT mid")
    expected = np.mean([table_value(a) - table_value(b) for a, b in zip(a_items, b_items, strict=True)])
    assert r["diff"] == pytest.approx(expected, abs=1e-9)  # the difference of the table values
    assert r["score_a"] == pytest.approx(np.mean([table_value(a) for a in a_items]), abs=1e-9)
    true = 100 * 0.25 * (1 - np.mean(list(uneven.values())))  # E[a − b] per cell, weights sum to 1
    assert r["ci_low"] <= true <= r["ci_high"]
    assert r["ci_low"] > 0  # a real shift: the interval excludes 0
    assert (r["n_seeds"], r["n_items"]) == (3, 360)
    pooled = 100 * np.mean([np.mean([s for *_, s in a]) - np.mean([s for *_, s in b])
                            for a, b in zip(a_items, b_items, strict=True)])  # fmt: skip
    assert abs(pooled - expected) > 0.1  # the test tells the tables' weights from an item mean


def test_no_difference_gives_an_interval_around_0(tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for seed in range(3):
        paths += [write_eval(tmp_path, "niah", "m", f"mid-refine-s{seed}", niah_items(rng, 0.5)),
                  write_eval(tmp_path, "niah", "m", f"mid-sft-s{seed}", niah_items(rng, 0.5))]  # fmt: skip
    r = row(differences_table(paths, n_boot=1000), "REFINE mid − SFT mid")
    assert r["ci_low"] < 0 < r["ci_high"]
    assert r["ci_high"] - r["ci_low"] < 20  # 1080 paired items: a few points wide, not the whole range


def test_the_interval_has_its_nominal_coverage():
    """Over many synthetic studies with a known difference, the 95% interval covers it about 95% of
    the time (the bootstrap neither ignores a level of variation nor double-counts one)."""
    rng = np.random.default_rng(3)
    n_seeds, n_cells, n_per = 3, 4, 40
    members, weights = item_weights("niah", [("niah_single_1", 100 * (k // n_per)) for k in range(n_cells * n_per)])
    covered, true = 0, 10.0
    for _ in range(120):
        seed_effect = rng.normal(0, 3, (n_seeds, 1))  # seeds differ from each other ...
        item_effect = rng.normal(0, 20, (1, n_cells * n_per))  # ... and items from each other
        diffs = true + seed_effect + item_effect + rng.normal(0, 5, (n_seeds, n_cells * n_per))
        _, low, high = paired_bootstrap(diffs, members, weights, n_boot=400, seed=int(rng.integers(1 << 30)))
        covered += low <= true <= high
    assert 0.85 <= covered / 120 <= 1.0


def test_items_are_paired_by_id_and_seeds_by_seed(tmp_path):
    rng = np.random.default_rng(4)
    paths_sorted, paths_shuffled = [], []
    for seed in range(2):
        b = niah_items(rng, 0.5, n=20)
        a = [(i, g, n, 1.0 - s if k % 5 == 0 else s) for k, (i, g, n, s) in enumerate(b)]
        for root, shuffle, paths in ((tmp_path / "sorted", False, paths_sorted),
                                     (tmp_path / "shuffled", True, paths_shuffled)):  # fmt: skip
            paths += [write_eval(root, "niah", "m", f"mid-refine-s{seed}", a, shuffle=shuffle),
                      write_eval(root, "niah", "m", f"mid-sft-s{seed}", b)]  # fmt: skip
    extra = write_eval(tmp_path / "sorted", "niah", "m", "mid-refine-s7", niah_items(rng, 1.0, n=20))
    one = differences_table(paths_sorted, n_boot=300)
    two = differences_table(paths_shuffled, n_boot=300)
    pd.testing.assert_frame_equal(one, two)  # the order of the lines does not matter: ids do
    three = differences_table([*paths_sorted, extra], n_boot=300)  # seed 7 has no SFT twin: dropped
    pd.testing.assert_frame_equal(one, three)
    # pairing: a and b differ on 20% of the items only, so the paired interval is narrow
    r = row(one, "REFINE mid − SFT mid")
    assert r["ci_high"] - r["ci_low"] < 25


def test_every_comparison_of_the_paper_and_its_suite_groups(tmp_path):
    rng = np.random.default_rng(5)
    paths = []
    runs = ("mid-refine", "mid-sft", "mid-sft_matched", "post-nested_refine", "post-nested_sft")
    niah_variants = ("niah_single_1", "niah_multikey_1", "niah_multiquery", "niah_multivalue")
    for run in runs:
        paths.append(write_eval(tmp_path, "niah", "m", f"{run}-s0", niah_items(rng, 0.5, 10, niah_variants)))
        qa = [(f"{d}/{n}/{k}", d, n, rng.random() < 0.4) for d in ("squad", "hotpotqa") for n in LENGTHS
              for k in range(10)]  # fmt: skip
        paths.append(write_eval(tmp_path, "qa", "m", f"{run}-s0", qa))
        lb = [(f"{t}/{k}", t, 100 + k, rng.random()) for t in ("trec", "samsum") for k in range(10)]
        paths.append(write_eval(tmp_path, "longbench", "m", f"{run}-s0", lb))
    for ttt in ("sft", "refine"):
        qa = [(f"{d}/{n}/{k}", d, n, rng.random() < 0.4) for d in ("squad",) for n in LENGTHS for k in range(10)]
        paths.append(write_eval(tmp_path, "qa", "m", "post-nested_refine-s0", qa, ttt=ttt))
        lb = [(f"{t}/{k}", t, 100 + k, rng.random()) for t in ("trec",) for k in range(10)]
        paths.append(write_eval(tmp_path, "longbench", "m", "mid-refine-s0", lb, ttt=ttt))
    table = differences_table(paths, n_boot=200)
    got = set(zip(table["comparison"], table["group"], table["arm_a"], table["arm_b"], strict=True))
    mid = {"S", "MK", "MQ", "MV", "QA", "LongBench Avg"}
    expected = {("REFINE mid − SFT mid", g, "mid-refine", "mid-sft") for g in mid}
    expected |= {("REFINE mid − compute-matched SFT mid", g, "mid-refine", "mid-sft_matched") for g in mid}
    expected |= {("Nested REFINE − Nested SFT", g, "post-nested_refine", "post-nested_sft") for g in mid}
    expected |= {("TTT-REFINE − TTT-SFT", "QA", "post-nested_refine+ttt-refine", "post-nested_refine+ttt-sft"),
                 ("TTT-REFINE − TTT-SFT", "LongBench Avg", "mid-refine+ttt-refine", "mid-refine+ttt-sft")}
    assert got == expected
    assert np.isfinite(table[["diff", "ci_low", "ci_high"]].to_numpy()).all()
    assert ((table["ci_low"] <= table["diff"]) & (table["diff"] <= table["ci_high"])).all()


@pytest.mark.slow
def test_the_smoke_study_has_the_differences_table_with_finite_intervals(smoke_results):
    from refine.eval.suites import SUITES
    from refine.report.differences import COMPARISONS

    table = pd.read_csv(smoke_results / "differences_table.csv")
    assert set(table["comparison"]) == {label for label, _, _ in COMPARISONS}
    assert {"S", "MK", "MQ", "MV", "QA", "LongBench Avg"} <= set(table["group"])
    values = table[["diff", "ci_low", "ci_high", "score_a", "score_b"]].to_numpy()
    assert np.isfinite(values).all()
    assert ((table["ci_low"] <= table["diff"]) & (table["diff"] <= table["ci_high"])).all()
    assert (smoke_results / "figures" / "differences_forest.png").stat().st_size > 10_000
    # the point estimates are the differences of the suites' own tables
    niah = pd.read_csv(smoke_results / SUITES["niah"].outputs[0].path).set_index(["model", "method"])
    longbench = pd.read_csv(smoke_results / SUITES["longbench"].outputs[0].path).set_index(["model", "method"])
    for r in table.itertuples():
        if r.suite == "niah":
            expected = niah.loc[(r.model, r.arm_a), f"{r.group}_mean"] - niah.loc[(r.model, r.arm_b), f"{r.group}_mean"]
            assert r.diff == pytest.approx(expected, abs=1e-6), r
        elif r.suite == "longbench":  # the official task scores are rounded to 2 decimals
            expected = longbench.loc[(r.model, r.arm_a), "Avg"] - longbench.loc[(r.model, r.arm_b), "Avg"]
            assert r.diff == pytest.approx(expected, abs=0.02), r
