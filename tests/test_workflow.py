"""The DAG: it plans for every shipped config, rejects bad config keys at build time, and the
smoke config runs end to end into tables, figures and MLflow runs that agree with each other."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--workflow-profile", "none"]


def _run(args, tmp_path, timeout=120):
    return subprocess.run(SNAKEMAKE + args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("configfile", [None, "config/smoke.yaml", "config/study_long.yaml", "config/paper.yaml"])
def test_dag_plans(configfile, tmp_path):
    args = ["-n", "all", "--quiet", "rules", "--config", f"results_dir={tmp_path}"]
    if configfile:
        args += ["--configfile", configfile]
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "eval_run" in done.stdout and "midtrain" in done.stdout


def test_bad_config_key_stops_the_dag(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"midtrain": {"refine": {"refine": {"rollout_lenn": 3}}}}))
    done = _run(["-n", "all", "--configfile", str(bad), "--config", f"results_dir={tmp_path}"], tmp_path)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "midtrain.refine.refine" in out and "rollout_lenn" in out


@pytest.mark.slow
def test_smoke_pipeline_end_to_end(smoke_results):
    results = smoke_results  # one clean smoke DAG run, shared with tests/test_reproducibility.py
    for name in ("niah_table.csv", "qa_table.csv", "longbench_table.csv", "ntp_table.csv"):
        table = pd.read_csv(results / name)
        assert len(table) > 0, name
        if name == "ntp_table.csv":  # the rollout-signal columns exist for REFINE runs only
            refine_rows = table["run"].str.contains("refine")
            signal = [c for c in table.columns if c.startswith(("rollout_", "frac_reward"))]
            assert signal and table.loc[refine_rows, signal].notna().all().all()
            assert table.loc[~refine_rows, signal].isna().all().all()
            table = table.drop(columns=signal)
        numeric = table.select_dtypes("number")
        assert numeric.notna().all().all(), name
    niah = pd.read_csv(results / "niah_table.csv")
    assert {"S_mean", "S_first_token_acc", "S_char_acc", "S_answer_logprob"} <= set(niah.columns)
    assert {"base", "mid-sft", "mid-refine", "mid-sft_matched"} <= set(niah["method"])
    qa = pd.read_csv(results / "qa_table.csv")
    assert {"post-nested_refine+ttt-refine", "post-nested_refine+ttt-sft"} <= set(qa["method"])
    assert (pd.read_csv(results / "longbench_table.csv")["source"] == "synthetic LongBench-format suite").all()
    for fig in ("training_curves", "niah_heatmaps", "niah_bars", "qa_bars", "longbench_bars"):
        assert (results / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    # REFINE runs logged finite reward statistics
    refine_tsv = pd.read_csv(results / "models" / "deltanet" / "mid-refine-s0" / "metrics.tsv", sep="\t")
    for col in ("reward", "reward_std", "frac_reward_zero_std", "rollout_exact", "pg_loss", "ntp_loss"):
        assert refine_tsv[col].notna().all() and refine_tsv[col].map(float).abs().lt(1e6).all(), col
    # the tables hold what MLflow holds for the same runs
    _check_tables_match_mlflow(results)


def _check_tables_match_mlflow(results: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    for scores in (results / "eval" / "niah").rglob("scores.json"):
        rec = json.loads(scores.read_text())
        logged = client.get_run(rec["mlflow_run_id"]).data.metrics
        for name, value in rec["metrics"].items():
            assert logged[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    table = pd.read_csv(results / "niah_table.csv")
    row = table[(table["model"] == "deltanet") & (table["method"] == "mid-refine")].iloc[0]
    rec = json.loads((results / "eval/niah/deltanet/mid-refine-s0/ttt-none/scores.json").read_text())
    logged = client.get_run(rec["mlflow_run_id"]).data.metrics
    s_cols = [c for c in table.columns if c.startswith("S@") and not c.endswith("_std")]
    assert s_cols
    for col in s_cols:
        length = col.split("@")[1]
        variants = [k for k in logged if k.endswith(f"/len{length}/score") and "single" in k]
        expected = sum(logged[k] for k in variants) / len(variants)
        assert row[col] == pytest.approx(expected, rel=1e-3), col
