"""The paper run rehearsed end to end (README: "Rehearse before you book GPUs"): config/paper.yaml's
DAG at tiny size (config/rehearsal.yaml) through a real single-node SLURM (tools/slurm_local.sh)
and the cluster profile's CPU twin (profiles/rehearsal), every training job under torchrun with 2
gloo processes. One training job's SLURM allocation is cancelled mid-run (`scancel`); the
profile's retry resubmits it, it resumes from its checkpoint, and its final weights equal those of
the same job run uninterrupted — so every table built from it equals an uninterrupted rehearsal's
(evaluation is deterministic in the weights and the seed; tests/test_reproducibility.py).

Slow (~15-20 min on 2 cores); run by .ci/run. Needs root for apt and the daemons, as CI has.
"""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "results" / "rehearsal" / "assets"
TARGET = ("deltanet", "mid-refine-s0")  # the job whose allocation is cancelled
TRAIN_RULES = ("pretrain", "midtrain", "posttrain")
EVAL_RULES = ("eval_run", "eval_ttt")


def _sacct(env) -> list[dict]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,Comment,State,ExitCode"], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rows = [dict(zip(("id", "comment", "state", "exit"), line.split("|"), strict=True)) for line in out.splitlines()]
    return [r for r in rows if r["comment"].startswith("rule_")]


def _running_job_of(env, model: str, run: str) -> str | None:
    """The SLURM id of the running midtrain job of (model, run): snakemake-executor-plugin-slurm
    comments a job "rule_<rule>_wildcards_<wildcard values joined by _>"."""
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], env=env, capture_output=True, text=True)
    method, seed = run.split("-", 1)[1].rsplit("-s", 1)
    wanted = f"rule_midtrain_wildcards_{model}_{method}_{seed}"
    for line in out.stdout.splitlines():
        job, comment = line.split("|", 1)
        if comment.strip() == wanted:
            return job
    return None


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the rehearsal's SLURM needs root (apt, munged, slurmd)")
    state = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", "tools/slurm_local.sh", "start", str(state)], cwd=ROOT, capture_output=True,
                           text=True, timeout=900)  # fmt: skip
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    env = {**os.environ, "SLURM_CONF": str(state / "etc" / "slurm.conf")}
    yield env
    subprocess.run(["bash", "tools/slurm_local.sh", "stop", str(state)], cwd=ROOT, capture_output=True)


@pytest.mark.slow
def test_paper_rehearsal_through_slurm(slurm, tmp_path):
    env = slurm
    built = subprocess.run([sys.executable, "-m", "refine.rehearsal", str(ASSETS)], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "snakemake", "all", "--profile", "profiles/rehearsal",
           "--configfile", "config/rehearsal.yaml", "--config", f"results_dir={results}"]  # fmt: skip
    started = time.monotonic()
    target = results / "models" / TARGET[0] / TARGET[1]
    with (tmp_path / "snakemake-1.log").open("w") as log:
        dag = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        cancelled = None
        while dag.poll() is None and cancelled is None:  # cancel the target once it has a checkpoint
            if (target / "checkpoints" / "latest").is_file() and not (target / "model").exists():
                job = _running_job_of(env, *TARGET)
                if job is not None:
                    subprocess.run(["scancel", job], env=env, check=True)
                    cancelled = job
            time.sleep(0.2)
        assert cancelled is not None, "the DAG ended before the target job could be cancelled"
        # snakemake-executor-plugin-slurm 2.8.0 reads sacct's "CANCELLED by <uid>" as still running
        # and would wait forever: stop the DAG as a user would (Ctrl-C: it cancels its other jobs)
        # once the cancelled job is accounted, and rerun the same command.
        while not any(r["id"] == cancelled and r["state"].startswith("CANCELLED") for r in _sacct(env)):
            time.sleep(1)
        dag.send_signal(signal.SIGINT)
        try:
            dag.wait(timeout=300)
        except subprocess.TimeoutExpired:
            dag.kill()
            dag.wait()
    subprocess.run(cmd + ["--unlock"], cwd=ROOT, env=env, capture_output=True, check=True)
    with (tmp_path / "snakemake-2.log").open("w") as log:
        rerun = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=3000)
    elapsed = time.monotonic() - started
    text = (tmp_path / "snakemake-2.log").read_text()
    assert rerun.returncode == 0, text[-4000:]
    print(f"rehearsal DAG through SLURM, cancelled and rerun: {elapsed:.0f} s")

    # every training and evaluation job ran as a SLURM job and completed (some after a cancellation)
    jobs = _sacct(env)
    states = {r["id"]: r["state"] for r in jobs}
    assert states[cancelled].startswith("CANCELLED")
    completed = {r["comment"] for r in jobs if (r["state"], r["exit"]) == ("COMPLETED", "0:0")}
    others = [r for r in jobs if r["comment"] not in completed]
    assert not others, f"jobs that never completed: {others}"
    assert all(r["state"].startswith(("COMPLETED", "CANCELLED")) for r in jobs), jobs
    done = [r for r in jobs if (r["state"], r["exit"]) == ("COMPLETED", "0:0")]
    ran = sorted({r["comment"] for r in done})
    trained = {p.parent.relative_to(results / "models") for p in (results / "models").rglob("final_metrics.json")}
    assert sum(c.startswith(tuple(f"rule_{r}_" for r in TRAIN_RULES)) for c in ran) == len(trained) == 14
    n_eval_jobs = sum(c.startswith(tuple(f"rule_{r}_" for r in EVAL_RULES)) for c in ran)
    assert n_eval_jobs == 18  # 7 runs x 2 models (every suite in one job) + 4 test-time-training jobs
    training_logs = list((results / "logs").glob("midtrain/*.log")) + list((results / "logs").glob("posttrain/*.log"))
    for path in training_logs:  # torchrun with 2 gloo processes, as paper.yaml's 8 NCCL ones
        assert "rank 1/2 joined the gloo process group" in path.read_text(), path
    assert len(training_logs) == 12

    # tables, report, MLflow
    for name in ("niah_table.csv", "qa_table.csv", "longbench_table.csv", "ntp_table.csv"):
        assert (results / name).stat().st_size > 100, name
    report = subprocess.run([sys.executable, "-m", "snakemake", "--report", str(results / "report.html"),
                             "--configfile", "config/rehearsal.yaml", "--config", f"results_dir={results}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert report.returncode == 0 and (results / "report.html").stat().st_size > 10_000, report.stderr[-2000:]
    with sqlite3.connect(results / "mlflow.db") as db:
        states = dict(db.execute("select status, count(*) from runs group by status").fetchall())
    assert states.get("RUNNING", 0) == 0, states
    assert states.get("FINISHED", 0) >= len(trained) + n_eval_jobs, states

    # the cancelled job resumed from its checkpoint, to the weights of the same job run without interruption
    target_log = (results / "logs" / "midtrain" / f"{TARGET[0]}-refine-s0.log").read_text()
    assert "resumed from" in target_log and "(optimizer step 0)" not in target_log
    resumed = target / "model"
    fresh = tmp_path / "uninterrupted"
    rerun = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "refine.cli", "train",
         "--config", str(results / "config.resolved.yaml"), "--stage", "midtrain", "--method", "refine",
         "--model", TARGET[0], "--seed", "0", "--init", str(results / "models" / TARGET[0] / "base" / "model"),
         "--out", str(fresh)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for weights in sorted(resumed.glob("*.safetensors")):
        assert weights.read_bytes() == (fresh / "model" / weights.name).read_bytes(), weights.name
    shutil.rmtree(fresh)
