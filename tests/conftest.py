"""Shared test setup: deterministic, small thread count, no network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("REFINE_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    """One clean run of the smoke DAG (`config/smoke.yaml`) for the slow pipeline tests; its
    results directory, after every job succeeded. `REFINE_SMOKE_RESULTS=<folder>` reuses a finished
    smoke run's results folder instead (rerunning a slow check without the DAG)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if os.environ.get("REFINE_SMOKE_RESULTS"):  # opt-in: a finished smoke run's results folder, reused
        return Path(os.environ["REFINE_SMOKE_RESULTS"]).resolve()
    results = tmp_path_factory.mktemp("smoke") / "results"
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", "-j2", "all",
           "--configfile", "config/smoke.yaml", "--config", f"results_dir={results}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=2400)
    if done.returncode != 0:
        logs = "\n".join(p.read_text()[-1500:] for p in sorted((results / "logs").rglob("*.log"))[-3:])
        pytest.fail(f"smoke DAG failed:\n{done.stderr[-3000:]}\n{logs}")
    return results
