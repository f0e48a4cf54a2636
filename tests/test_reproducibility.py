"""Same seed, same tables: two runs of the smoke DAG from empty results directories give
identical tables and bit-identical model files, also when one of them is killed with SIGKILL at
a random point and restarted with the commands the README gives for that case
(`snakemake --unlock ...`, then the same command with `--rerun-incomplete`)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--workflow-profile", "none"]
TABLES = ("niah_table.csv", "qa_table.csv", "longbench_table.csv", "ntp_table.csv")
TIMING = ("wall_time_s",)  # measured, not computed: the only columns allowed to differ


def _smoke_args(results: Path) -> list[str]:
    return ["-j2", "all", "--configfile", "config/smoke.yaml", "--config", f"results_dir={results}"]


def _model_files(results: Path) -> dict[str, bytes]:
    files = sorted((results / "models").rglob("model/*.safetensors"))
    return {str(p.relative_to(results)): p.read_bytes() for p in files}


def _tables(results: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for name in TABLES:
        table = pd.read_csv(results / name)
        out[name] = table.drop(columns=[c for c in table.columns if c.startswith(TIMING)])
    return out


@pytest.mark.slow
def test_same_seed_same_tables_after_sigkill(smoke_results, tmp_path):
    clean = smoke_results
    killed = tmp_path / "results"
    proc = subprocess.Popen(SNAKEMAKE + _smoke_args(killed), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    delay = random.uniform(20.0, 120.0)
    try:
        proc.wait(timeout=delay)
        pytest.fail(f"the smoke DAG finished within {delay:.0f} s, before it could be killed")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole DAG: snakemake and every running job
        proc.wait()
    time.sleep(1.0)
    unlock = subprocess.run(SNAKEMAKE + _smoke_args(killed) + ["--unlock"], cwd=ROOT, capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    rerun = subprocess.run(SNAKEMAKE + _smoke_args(killed) + ["--rerun-incomplete"], cwd=ROOT,
                           capture_output=True, text=True, timeout=2400)  # fmt: skip
    assert rerun.returncode == 0, f"rerun after SIGKILL at {delay:.0f} s failed:\n{rerun.stderr[-3000:]}"

    a, b = _tables(clean), _tables(killed)
    for name in TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=f"{name} (killed at {delay:.0f} s)")
    models_a, models_b = _model_files(clean), _model_files(killed)
    assert models_a and models_a.keys() == models_b.keys()
    differ = [name for name in models_a if models_a[name] != models_b[name]]
    assert not differ, f"model files differ after SIGKILL at {delay:.0f} s: {differ}"
