"""The DAG: it plans for every shipped config, rejects bad config keys at build time, and the
smoke config runs end to end into tables, figures and MLflow runs that agree with each other."""

import json
import re
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


def test_the_rules_run_every_registered_suite(tmp_path):
    """The registry is the rules' list of suites: one report rule per suite (its outputs the suite's files), one
    evaluation job covering every suite, test-time training exactly where a suite asks for it."""
    from refine import names
    from refine.eval.suites import SUITES

    done = _run(["-n", "-p", "all", "--configfile", "config/smoke.yaml", "--config", f"results_dir={tmp_path}"],
                tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert tuple(SUITES) == names.SUITES
    blocks = re.split(r"^(?=(?:local)?rule \w+:)", done.stdout, flags=re.M)
    rules = {m.group(1): b for b in blocks if (m := re.match(r"(?:local)?rule (\w+):", b))}
    for name, suite in SUITES.items():
        block = rules[f"report_{name}"]
        outputs = re.search(r"^\s+output: (.+)$", block, re.M).group(1).split(", ")
        assert outputs == [f"{tmp_path}/{out.path}" for out in suite.outputs], name
        assert f"refine report {name} " in block
    assert f"refine eval ntp,{','.join(SUITES)} " in done.stdout
    ttt = set(re.findall(rf"^\s+output: {re.escape(str(tmp_path))}/eval/(\w+)/\S+/ttt-sft/", done.stdout, re.M))
    assert ttt == {name for name, suite in SUITES.items() if suite.ttt_runs}


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


# --- issue 13: safe and side-effect free ------------------------------------------------------------


def test_dry_run_has_no_side_effects_and_keeps_every_path_under_results(tmp_path):
    """One dry run of the smoke study with command-line overrides in the README's form: it
    creates nothing, plans every output and log below results_dir, and the list/nested values
    arrive as numbers (the study plans a second seed)."""
    results = tmp_path / "results dir"  # a space: every shell value is quoted
    args = ["-n", "-p", "all", "--configfile", "config/smoke.yaml",
            "--config", f"results_dir={results}", "seeds=[0,1]", "eval={ttt: {lr: 1e-4, steps: 2}}"]  # fmt: skip
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert not results.exists(), "a dry run must not create the results folder or the resolved config"
    assert "mid-refine-s1" in done.stdout
    paths = re.findall(r"^\s+(?:output|log|benchmark): (.+)$", done.stdout, re.M)
    assert len(paths) > 40
    for line in paths:
        for path in line.split(", "):
            assert Path(path).resolve().is_relative_to(results.resolve()), path
    assert f"--config '{results}/config.resolved.yaml'" in done.stdout  # quoted for the shell


def test_hostile_values_stop_the_dag_before_any_shell(tmp_path):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "bad.yaml"
    hostile = {"results_dir": f"results/x$(touch {marker})", "study": "../../../../escape",
               "models": {"deltanet": {"arch": "delta_net", "config": {"hidden_sise": 64}}}}  # fmt: skip
    bad.write_text(yaml.safe_dump(hostile))
    done = _run(["-j1", "all", "--configfile", str(bad)], tmp_path)
    assert done.returncode != 0 and not marker.exists()
    out = done.stdout + done.stderr
    assert "results_dir" in out and "study" in out and "Traceback" not in out


def test_cuda_without_cuda_stops_before_the_first_job(tmp_path):
    """`device: cuda` on a machine without CUDA, jobs run here: stopped when the run starts
    (a dry run, or a cluster profile whose jobs run on GPU nodes, plans normally)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from workflow_fakes import copy_workflow, fake_refine_env, snakemake

    wf = copy_workflow(tmp_path / "wf")
    results = tmp_path / "results"
    args = ["-j1", "tracking", "--configfile", "config/smoke.yaml", "--config", f"results_dir={results}", "device=cuda"]
    done = snakemake(args, wf, fake_refine_env(tmp_path / "bin"))
    assert done.returncode != 0
    assert "device: cuda, but no CUDA device" in done.stdout + done.stderr
    assert not (results / "tracking.ready").exists()


@pytest.mark.slow
def test_after_kill_9_unlock_then_rerun_incomplete(tmp_path):
    """What to type after `kill -9` of the DAG: `snakemake --unlock <args>`, then the same command
    with `--rerun-incomplete` (the same command alone fails on the incomplete output, then on the
    lock); the study then finishes. The killed job's output is redone (the stand-in `refine`
    writes it first, then sleeps: a half-done job)."""
    import os
    import signal
    import time

    from workflow_fakes import copy_workflow, fake_refine_env, snakemake

    wf = copy_workflow(tmp_path / "wf")
    env = {**fake_refine_env(tmp_path / "bin"), "FAKE_REFINE_SLOW": "train"}
    results = tmp_path / "results"
    args = ["-j1", "all", "--configfile", "config/smoke.yaml", "--config", f"results_dir={results}"]
    command = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", *args]
    proc = subprocess.Popen(command, cwd=wf, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while not list(results.glob("models/*/base/final_metrics.json")) and time.time() < deadline:
        time.sleep(0.2)  # the stand-in writes its output, then sleeps: a half-done training job
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    env.pop("FAKE_REFINE_SLOW")
    again = snakemake(args, wf, env)  # the killed job's output is marked incomplete
    assert again.returncode != 0 and "IncompleteFilesException" in again.stderr
    locked = snakemake([*args, "--rerun-incomplete"], wf, env)  # and the directory still locked
    assert locked.returncode != 0 and "LockException" in locked.stderr and "--unlock" in locked.stderr
    assert snakemake(["--unlock", *args], wf, env).returncode == 0
    done = snakemake([*args, "--rerun-incomplete"], wf, env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (results / "longbench_table.csv").exists()
