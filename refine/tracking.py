"""Experiment tracking: one `Tracker` interface (MLflow or nothing) and the TSV file beside each run.

Every run writes its metrics twice, under the same flat names and with the same values: to a
tracker (MLflow for browsing, `NullTracker` when tracking is off, so the loop never asks "is
tracking on?") and to `metrics.tsv` (`TSVLogger`), which pandas reads and from which the report
is built. The TSV file is the record; MLflow mirrors it.

MLflow facts this module relies on (ECOSYSTEM.md): the store is an explicit SQLite file,
`sqlite:///<absolute path>/mlflow.db` (`tracking_uri_for`); experiments are created with an
`artifact_location` under the results folder, and up front (`ensure_experiments`), because
parallel jobs that create the database or the same experiment at once can race. The
`MlflowClient` API is used instead of the fluent `mlflow.start_run`, so no global state is touched.
MLflow 3's UI opens an experiment on its GenAI overview (traces, an assistant panel). Every
experiment of the study is tagged `mlflow.experimentKind = custom_model_development` (the "custom
model training" kind of the UI's JavaScript bundle), on creation and when an existing experiment
lacks it. The UI of mlflow 3.17.2 reads that tag only with its global GenAI / Model training
switch off, and the switch is on in that release: the kind comes from the switch, which a URL
parameter sets (and the browser then remembers), so the address to open is `ui_url(...)`:
`http://127.0.0.1:5000/#/experiments?workflowType=machine_learning` (checked in headless
Chromium: with the parameter each experiment lands on its runs table; without it on the GenAI
overview, tag or no tag). `ensure_experiments` logs that address when it creates the database.

Under faults (issue 13):
- a fresh database migrated by several processes at once breaks for good (alembic "table ...
  already exists"), so the first use of a SQLite store in a process (creation, migration) and the
  creation of experiments run under an exclusive file lock, `<db>.lock` (`store_lock`);
- one MLflow run per job: `start_run` looks for a live run of the same name in the experiment (a
  job killed before `end_run` left it RUNNING; a finished job may be run again) and continues it
  when its params are the same; with other params (an edited config) the old run is deleted (it
  stays recoverable in MLflow's trash) and a new one created. Metrics of a resumed run append to
  its history; for the same step the later value is the one MLflow shows.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

_MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limits
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAM_LENGTH = 6000
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # MLflow 3 UI: the runs table, not the GenAI overview
UI_WORKFLOW = "workflowType=machine_learning"  # the 3.17 UI's switch to "Model training" (URL parameter)


def ui_url(experiment_id: str | None = None, host: str = "http://127.0.0.1:5000") -> str:
    """The `mlflow ui` address that opens the study's experiments (or one) on their runs tables."""
    if experiment_id is None:
        return f"{host}/#/experiments?{UI_WORKFLOW}"
    return f"{host}/#/experiments/{experiment_id}/runs?{UI_WORKFLOW}"


class Tracker(Protocol):
    """What the training loop and the evaluation commands report to."""

    def start_run(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str],
                  start_time: float | None = None, resume: bool = True) -> None: ...  # fmt: skip

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_artifact(self, path: str | Path) -> None: ...

    def end_run(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    """A tracker that records nothing."""

    def start_run(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str],
                  start_time: float | None = None, resume: bool = True) -> None:  # fmt: skip
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass

    def end_run(self, status: str = "FINISHED") -> None:
        pass


def flatten_params(params: Mapping[str, Any] | Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts (and dataclasses) → {"dotted.key": str(value)}; other values are stringified."""
    if is_dataclass(params) and not isinstance(params, type):
        params = asdict(params)
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) or (is_dataclass(value) and not isinstance(value, type)):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def tracking_uri_for(results_dir: str | Path) -> str:
    """The SQLite tracking URI of the MLflow database in `results_dir` (absolute path)."""
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


_READY_STORES: set[str] = set()  # SQLite stores this process has opened (created / migrated) under the lock


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive lock on `<db>.lock` beside a SQLite store (nothing for other stores)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        yield
        return
    db = Path(tracking_uri[len(prefix) :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_client(tracking_uri: str):
    """An MlflowClient whose store exists and is migrated; the first opening of a SQLite store in
    this process (which may create and migrate the database) holds `store_lock`."""
    from mlflow import MlflowClient

    if tracking_uri in _READY_STORES:
        return MlflowClient(tracking_uri)
    with store_lock(tracking_uri):
        client = MlflowClient(tracking_uri)
        client.search_experiments(max_results=1)  # the store (created, migrated) is ready
    _READY_STORES.add(tracking_uri)
    return client


def _default_artifact_root(tracking_uri: str) -> Path:
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        raise ValueError(
            f"tracking_uri: expected sqlite:///<path> for a default artifact_root, got {tracking_uri!r}"
        )
    return Path(tracking_uri[len(prefix) :]).parent / "mlartifacts"


def ensure_experiments(
    tracking_uri: str, names: Iterable[str], artifact_root: str | Path | None = None
) -> dict[str, str]:
    """Create the MLflow database and each experiment that does not exist yet; {name: id}.

    Each experiment stores its artifacts in `<artifact_root>/<name>` (default: `mlartifacts/`
    beside the database) and is tagged a model-training experiment (`EXPERIMENT_KIND`, also set
    on an existing experiment that lacks it). Safe to call again, and tolerant of another process creating the same
    experiment at the same moment.
    """
    root = Path(artifact_root) if artifact_root is not None else _default_artifact_root(tracking_uri)
    client = open_client(tracking_uri)
    ids = {}
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            location = (root / name).resolve()
            if not location.is_relative_to(root.resolve()):
                raise ValueError(f"MLflow experiment {name!r}: artifacts would leave {root} ({location})")
            with store_lock(tracking_uri):  # no other process creates it in the meantime
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    ids[name] = client.create_experiment(
                        name, artifact_location=location.as_uri(), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                    )
                    log.info("created MLflow experiment %r (artifacts in %s)", name, location)
                    log.info("browse it: mlflow ui --backend-store-uri %s, then open %s", tracking_uri,
                             ui_url(ids[name]))  # fmt: skip
                    continue
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # created before the tag existed
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        ids[name] = experiment.experiment_id
    return ids


class MLflowTracker:
    """A tracker writing to experiment `experiment` of the MLflow store at `tracking_uri`.

    The experiment is created if missing (see `ensure_experiments`; pipelines create experiments
    up front). One run at a time per tracker object.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | Path | None = None):
        self.tracking_uri = tracking_uri
        self.client = open_client(tracking_uri)
        self.experiment_id = ensure_experiments(tracking_uri, [experiment], artifact_root)[experiment]
        self.run_id: str | None = None

    def _active(self) -> str:
        if self.run_id is None:
            raise RuntimeError("MLflowTracker: no active run; call start_run first")
        return self.run_id

    def _runs_named(self, name: str) -> list:
        """Live (not deleted) runs of this experiment with run name `name`, newest first."""
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        where = f"attributes.run_name = '{quoted}'"
        return self.client.search_runs([self.experiment_id], where, order_by=["attributes.start_time DESC"])

    def start_run(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str],
                  start_time: float | None = None, resume: bool = True) -> None:  # fmt: skip
        """Start run `name`, or continue the live run of that name and the same params (see the
        module docstring: one run per job, whether the job was killed or is run again).

        `start_time` (seconds since the epoch, default now) is the start MLflow shows for a new run,
        so a job that opens its run at the end (an evaluation) still shows its real duration.
        `resume=False` replaces every earlier run of the name (a job that has no checkpoint to
        resume from: its rerun is a new run, with its own start and end)."""
        from mlflow.entities import Param

        flat = {k: v[:_MAX_PARAM_LENGTH] for k, v in flatten_params(params).items()}
        previous = self._runs_named(name)
        same = [r for r in previous if r.data.params == flat] if resume else []
        for run in previous:
            if not same or run.info.run_id != same[0].info.run_id:
                self.client.delete_run(run.info.run_id)
                log.info("MLflow run %s (%s) replaced: deleted", run.info.run_id, name)
        if same:
            self.run_id = same[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)
            log.info("MLflow run %s (%s) resumed in experiment %s", self.run_id, name, self.experiment_id)
            return
        start_ms = int(1000 * start_time) if start_time is not None else None
        run = self.client.create_run(self.experiment_id, start_time=start_ms, run_name=name, tags=dict(tags))
        self.run_id = run.info.run_id
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_PARAMS_PER_BATCH])
        log.info("MLflow run %s (%s) started in experiment %s", self.run_id, name, self.experiment_id)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        run_id = self._active()
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        for i in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[i : i + _MAX_METRICS_PER_BATCH])

    def log_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self._active(), str(path))

    def end_run(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self._active(), status=status)
        self.run_id = None


def training_run_tags(model_dir: str | Path) -> dict[str, str]:
    """The tags an evaluation run of `model_dir` carries about what it evaluates: the stage, method,
    seed and MLflow run id (`train_run_id`) of the training run that wrote the model (its
    `run.json`, beside `model/`); a model imported from a checkpoint is stage pretrain, method
    imported. With them the MLflow UI groups evaluation runs by method and links each to its training."""
    import json

    run_json = Path(model_dir).parent / "run.json"
    if not run_json.exists():
        return {"stage": "pretrain", "method": "imported"}
    rec = json.loads(run_json.read_text())
    tags = {k: str(rec[k]) for k in ("stage", "method", "seed") if rec.get(k) is not None}
    if rec.get("mlflow_run_id"):
        tags["train_run_id"] = rec["mlflow_run_id"]
    return tags


class TSVLogger:
    """`metrics.tsv`: one row per logged step, a `step` column then the metric names.

    Rows already in the file with a step above `keep_up_to_step` are dropped when the logger is
    opened: they were written after the checkpoint a resumed run starts from, and the resumed run
    writes them again. A row may hold a subset of the columns (empty cells); a new metric name
    extends the header and rewrites the file. Values are written with `repr`, so reading them back
    gives the very floats that were logged.
    """

    def __init__(self, path: str | Path, keep_up_to_step: int = 0):
        self.path = Path(path)
        self.columns: list[str] = []
        self.rows: list[tuple[int, dict[str, float]]] = []
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            if lines:
                self.columns = lines[0].split("\t")[1:]
            for line in lines[1:]:
                step_text, *cells = line.split("\t")
                row = {k: float(c) for k, c in zip(self.columns, cells, strict=True) if c != ""}
                if int(step_text) <= keep_up_to_step:
                    self.rows.append((int(step_text), row))
        self._rewrite()

    def _format(self, step: int, metrics: Mapping[str, float]) -> str:
        cells = [repr(float(metrics[k])) if k in metrics else "" for k in self.columns]
        return "\t".join([str(step), *cells]) + "\n"

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "\t".join(["step", *self.columns]) + "\n"
        text += "".join(self._format(step, row) for step, row in self.rows)
        self.path.write_text(text)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Append the row of `step`; `metrics` are flat {name: number}."""
        row = {k: float(v) for k, v in metrics.items()}
        self.rows.append((step, row))
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns.extend(new)
            self._rewrite()
        else:
            with open(self.path, "a") as f:
                f.write(self._format(step, row))
