"""Tracking: flat params, the TSV file's resume truncation and exact values, experiments created up
front under the results folder, and an MLflow run that holds exactly the rows of metrics.tsv."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from transformers import LlamaConfig, LlamaForCausalLM

from refine.tracking import MLflowTracker, TSVLogger, ensure_experiments, flatten_params, tracking_uri_for
from refine.train.config import TrainConfig
from refine.train.loop import train
from refine.train.ntp import NTPMethod


@dataclass
class Inner:
    width: int = 3


def test_flatten_params_gives_dotted_keys():
    flat = flatten_params({"a": 1, "b": {"c": [1, 2], "d": {"e": None}}, "f": Inner()})
    assert flat == {"a": "1", "b.c": "[1, 2]", "b.d.e": "None", "f.width": "3"}


def test_tracking_uri_is_an_absolute_sqlite_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = tracking_uri_for("results")
    assert uri == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"
    assert Path(uri.removeprefix("sqlite:///")).is_absolute()


def test_tsv_logger_truncates_on_resume_and_keeps_exact_values(tmp_path):
    path = tmp_path / "metrics.tsv"
    logger = TSVLogger(path)
    values = [0.1 + 0.2, 1 / 3, 2.5e-7]
    for step, value in enumerate(values, start=1):
        logger.log({"loss": value}, step)
    logger.log({"loss": 9.0, "val_loss": 1 / 7}, 4)  # a new column rewrites the header
    frame = pd.read_csv(path, sep="\t")
    assert list(frame.columns) == ["step", "loss", "val_loss"]
    assert frame["loss"].tolist() == [*values, 9.0]  # exact, not approximately
    assert frame["val_loss"].isna().tolist() == [True, True, True, False]

    resumed = TSVLogger(path, keep_up_to_step=2)
    assert [step for step, _ in resumed.rows] == [1, 2]
    resumed.log({"loss": 5.0}, 3)
    frame = pd.read_csv(path, sep="\t")
    assert frame["step"].tolist() == [1, 2, 3]
    assert frame["loss"].tolist() == [values[0], values[1], 5.0]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results folder whose MLflow database and experiments exist (created once: it takes seconds)."""
    path = tmp_path_factory.mktemp("results")
    ensure_experiments(tracking_uri_for(path), ["study/pretrain", "study/midtrain"], path / "artifacts")
    return path


def test_ensure_experiments_is_idempotent_and_keeps_artifacts_under_results(results):
    uri = tracking_uri_for(results)
    assert (results / "mlflow.db").is_file()
    client = MlflowClient(uri)
    existing = client.get_experiment_by_name("study/midtrain").experiment_id
    ids = ensure_experiments(uri, ["study/midtrain", "study/posttrain"], results / "elsewhere")
    assert ids["study/midtrain"] == existing
    location = client.get_experiment(existing).artifact_location
    assert location == (results / "artifacts/study/midtrain").resolve().as_uri()
    new_location = client.get_experiment(ids["study/posttrain"]).artifact_location
    assert new_location == (results / "elsewhere/study/posttrain").resolve().as_uri()


def test_experiments_are_marked_model_training_new_and_existing(results):
    """MLflow 3's UI lands on the runs table only for experiments tagged with the kind its JS bundle
    names CUSTOM_MODEL_DEVELOPMENT; an experiment created before the tag existed gets it too."""
    uri = tracking_uri_for(results)
    client = MlflowClient(uri)
    old = client.create_experiment("study/untagged", artifact_location=(results / "artifacts/untagged").as_uri())
    assert "mlflow.experimentKind" not in client.get_experiment(old).tags
    ids = ensure_experiments(uri, ["study/untagged", "study/eval"], results / "artifacts")
    assert ids["study/untagged"] == old
    for experiment_id in (*ids.values(), client.get_experiment_by_name("study/pretrain").experiment_id):
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_experiment_kind_is_one_the_installed_mlflow_ui_knows():
    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    texts = (p.read_text(errors="ignore") for p in bundle.glob("main.*.js"))
    assert any('CUSTOM_MODEL_DEVELOPMENT="custom_model_development"' in t for t in texts)


class RowDataset(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.ids = torch.randint(0, 64, (n, 12), generator=torch.Generator().manual_seed(1))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        return {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}


class KilledAfter(NTPMethod):
    def __init__(self, batches: int):
        self.left = batches

    def updates(self, model, batch):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        yield from super().updates(model, batch)


def test_mlflow_run_holds_exactly_the_metrics_of_the_tsv_file_after_a_resume(results, tmp_path):
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    cfg = TrainConfig(max_steps=4, batch_size=2, checkpoint_every=2, log_every=1, eval_every=2, bf16=False)
    data = RowDataset(6)
    tracker = MLflowTracker(tracking_uri_for(results), "study/pretrain")
    out = tmp_path / "run"
    evaluate = lambda model: {"val": 1.0}  # noqa: E731

    tracker.start_run("killed", {"train": {"lr": cfg.lr}}, {"stage": "pretrain"})
    with pytest.raises(KeyboardInterrupt):  # checkpoint at 2, step 3 logged, killed in step 4
        train(LlamaForCausalLM(config), KilledAfter(3), data, cfg, out, tracker, evaluate=evaluate)
    tracker.end_run("KILLED")

    tracker.start_run("resumed", {"train": {"lr": cfg.lr}}, {"stage": "pretrain"})
    run_id = tracker.run_id
    train(LlamaForCausalLM(config), NTPMethod(), data, cfg, out, tracker, evaluate=evaluate)
    tracker.end_run()

    frame = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert frame["step"].tolist() == [1, 2, 3, 4]
    client = MlflowClient(tracking_uri_for(results))
    run = client.get_run(run_id)
    metric_names = [c for c in frame.columns if c != "step"]
    assert set(run.data.metrics) == set(metric_names)
    loop_metrics = {"loss", "lr", "grad_norm", "tokens", "optimizer_steps", "wall_time_s", "ntp_loss"}
    assert loop_metrics <= set(metric_names)
    for name in metric_names:
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
        expected = [(int(s), v) for s, v in zip(frame["step"], frame[name], strict=True) if not pd.isna(v)]
        assert history == expected, name
    assert frame["val"].notna().tolist() == [False, True, False, True]  # eval_every=2 and the last step
    assert run.data.params == {"train.lr": str(cfg.lr)}
    assert run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run_id)} == {"metrics.tsv", "final_metrics.json"}
    artifact_dir = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifact_dir.is_relative_to(results / "artifacts")


# --- issue 13: MLflow under faults ------------------------------------------------------------------

_WRITER = r"""
import sys, time
from pathlib import Path
from refine.tracking import MLflowTracker
uri, go, index = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
go.with_name(f"ready{index}").touch()  # mlflow imported: wait at the barrier
while not go.exists():
    time.sleep(0.01)
tracker = MLflowTracker(uri, "study/eval")
tracker.start_run(f"job{index}", {"index": index}, tags={})
tracker.log_metrics({"score": float(index)}, step=0)
tracker.end_run()
"""


@pytest.mark.parametrize("writers", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_parallel_writers_on_a_fresh_database(tmp_path, writers):
    """Jobs started by hand at once on a fresh database: every one succeeds, and so does the
    next command (a database half-migrated by several processes used to break for good)."""
    import subprocess
    import sys

    uri = tracking_uri_for(tmp_path / "results")
    (tmp_path / "results").mkdir()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, uri, str(go), str(i)], stderr=subprocess.PIPE, text=True)
             for i in range(writers)]  # fmt: skip
    import time

    deadline = time.time() + 240
    while len(list(tmp_path.glob("ready*"))) < writers and time.time() < deadline:
        time.sleep(0.05)  # until every process has imported mlflow and waits at the barrier
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-1500:] for e in errors)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("study/eval").experiment_id])
    assert sorted(r.data.metrics["score"] for r in runs) == [float(i) for i in range(writers)]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_rerun_resumes_the_same_mlflow_run(results):
    """A job killed after `start_run` leaves a RUNNING run; its rerun (same name, same params)
    continues that run, so the experiment holds one run per job. A rerun with other params (an
    edited config) replaces the old run instead (the old one is deleted, not shown)."""
    uri = tracking_uri_for(results)
    killed = MLflowTracker(uri, "resume/pretrain")
    killed.start_run("deltanet/pretrain-ntp", {"lr": 0.1}, tags={"model": "deltanet"})
    killed.log_metrics({"loss": 3.0}, step=1)  # ... then kill -9: the run is never ended
    first = killed.run_id
    rerun = MLflowTracker(uri, "resume/pretrain")
    rerun.start_run("deltanet/pretrain-ntp", {"lr": 0.1}, tags={"model": "deltanet"})
    assert rerun.run_id == first
    rerun.log_metrics({"loss": 2.0}, step=2)
    rerun.end_run()
    again = MLflowTracker(uri, "resume/pretrain")  # a rerun of the finished job (e.g. forced)
    again.start_run("deltanet/pretrain-ntp", {"lr": 0.1}, tags={"model": "deltanet"})
    assert again.run_id == first
    again.end_run()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resume/pretrain").experiment_id
    runs = client.search_runs([exp])
    assert [r.info.run_id for r in runs] == [first] and runs[0].info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(first, "loss")] == [3.0, 2.0]
    edited = MLflowTracker(uri, "resume/pretrain")
    edited.start_run("deltanet/pretrain-ntp", {"lr": 0.2}, tags={"model": "deltanet"})
    replacement = edited.run_id
    edited.end_run()
    runs = client.search_runs([exp])
    assert [r.info.run_id for r in runs] == [replacement] and replacement != first
    assert runs[0].data.params["lr"] == "0.2"


def test_an_experiment_name_cannot_put_artifacts_outside_the_results_folder(results):
    with pytest.raises(ValueError, match="artifacts would leave"):
        ensure_experiments(tracking_uri_for(results), ["../../../../escape/eval"], results / "artifacts")
    assert MlflowClient(tracking_uri_for(results)).get_experiment_by_name("../../../../escape/eval") is None
