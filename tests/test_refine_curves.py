"""The REFINE curves figure reads the runs that logged a reward (seeds grouped, other runs left out)."""

import pandas as pd

from refine.report.refine_curves import refine_curves, refine_runs


def _run(root, model, run, reward=True):
    path = root / "models" / model / run
    path.mkdir(parents=True)
    df = pd.DataFrame({"step": [2, 4], "optimizer_steps": [2, 4], "loss": [3.0, 2.9]})
    if reward:
        df = df.assign(reward=[0.5, 0.7], reward_std=[0.1, 0.1], rollout_exact=[0.0, 0.2], frac_reward_zero_std=0.0)
    df.to_csv(path / "metrics.tsv", sep="\t", index=False)
    return path


def test_refine_runs_groups_seeds_and_skips_runs_without_a_reward(tmp_path):
    dirs = [_run(tmp_path, "lact", "mid-refine-s0"), _run(tmp_path, "lact", "mid-refine-s1")]
    dirs += [_run(tmp_path, "lact", "mid-sft-s0", reward=False), _run(tmp_path, "deltanet", "mid-refine-s0")]
    runs = refine_runs(dirs)
    assert sorted(runs) == [("deltanet", "mid-refine"), ("lact", "mid-refine")]
    assert [name for name, _ in runs[("lact", "mid-refine")]] == ["mid-refine-s0", "mid-refine-s1"]
    out = tmp_path / "figures" / "refine_curves.png"
    refine_curves(dirs, out)
    assert out.stat().st_size > 10_000
