"""MLflow as a researcher opens it (issue 11): `mlflow ui` on the smoke study's database, each
experiment opened in headless Chromium at the address `refine.tracking.ui_url` gives (the README's).
The experiments land on the runs table, not MLflow 3's GenAI overview; they carry the model-training
experiment kind; an evaluation run names the training run it evaluates."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

GENAI_OVERVIEW = ("Detect issues in your traces", "Traces 0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui(smoke_results):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{smoke_results / 'mlflow.db'}", "--port", str(port),
           "--workers", "1"]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # its own process group: the server and its workers  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("mlflow ui did not start in 120 s")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # `mlflow ui` leaves its server process behind otherwise
        server.wait(timeout=30)


@pytest.mark.slow
def test_each_experiment_opens_on_its_runs(mlflow_ui, smoke_results):
    from mlflow import MlflowClient

    from refine.tracking import ui_url

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the MLflow UI test needs Debian's chromium: apt-get install -y chromium (.ci/run installs it)")
    client = MlflowClient(f"sqlite:///{smoke_results / 'mlflow.db'}")
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    assert {e.name.rsplit("/", 1)[1] for e in experiments} >= {"pretrain", "midtrain", "posttrain", "eval"}
    shots = smoke_results / "mlflow_screenshots"
    shots.mkdir(exist_ok=True)
    for experiment in experiments:
        assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development", experiment.name
        page = ui_url(experiment.experiment_id, host=mlflow_ui)  # the address the README gives
        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1500,1000",
                "--virtual-time-budget=20000"]  # fmt: skip
        dom = subprocess.run([*args, "--dump-dom", page], capture_output=True, text=True, timeout=180).stdout
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", "", dom, flags=re.S)))
        runs = client.search_runs([experiment.experiment_id], max_results=5)
        assert runs, experiment.name
        assert not any(marker in text for marker in GENAI_OVERVIEW), (experiment.name, text[:1500])
        assert any(r.info.run_name in text for r in runs), (experiment.name, text[:1500])  # the runs table
        name = experiment.name.replace("/", "_")
        subprocess.run([*args, f"--screenshot={shots / f'{name}.png'}", page], capture_output=True, timeout=180)
    # an evaluation run links to the training run it evaluates, and says its stage / method / seed
    eval_exp = next(e for e in experiments if e.name.endswith("/eval"))
    run = client.search_runs([eval_exp.experiment_id], "tags.suite = 'niah' and tags.stage = 'midtrain'")[0]
    trained = client.get_run(run.data.tags["train_run_id"])
    assert trained.data.tags["method"] == run.data.tags["method"] and trained.data.tags["stage"] == "midtrain"
    # the run lasts as long as the evaluation did (its own wall time in scores.json), not the ~50 ms of logging
    scores = [json.loads(p.read_text()) for p in (smoke_results / "eval" / "niah").glob("*/*/ttt-none/scores.json")]
    wall_s = next(s["wall_time_s"] for s in scores if s["mlflow_run_id"] == run.info.run_id)
    assert wall_s > 0
    assert wall_s * 1000 - 5 <= run.info.end_time - run.info.start_time <= wall_s * 1000 + 5000
