"""`refine eval ntp`: held-out validation loss and next-token accuracy of a model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from refine.data.dataset import TokenDataset
from refine.models.registry import load_model
from refine.tracking import MLflowTracker, tracking_uri_for, training_run_tags
from refine.train.ntp import evaluate_ntp


def run_ntp_eval(cfg: dict, model_dir: str | Path, data: str | Path, out: str | Path) -> dict:
    started = time.time()  # the MLflow run's start: the evaluation's real duration
    torch.set_num_threads(cfg["threads"])
    model = load_model(model_dir, cfg["device"])
    scores = evaluate_ntp(model, TokenDataset(data), cfg["eval"]["ntp"]["batch_size"])
    run_dir = Path(model_dir).parent
    scores = {"model_dir": str(model_dir), **scores}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(scores, indent=2))
    tracker = MLflowTracker(tracking_uri_for(Path(cfg["results_dir"])), f"{cfg['study']}/eval")
    tags = {"suite": "ntp", "model": run_dir.parent.name, "run": run_dir.name, "ttt": "none",
            **training_run_tags(model_dir)}  # fmt: skip
    tracker.start_run(f"ntp/{run_dir.parent.name}/{run_dir.name}", {"model_dir": str(model_dir)}, tags=tags,
                      start_time=started, resume=False)  # fmt: skip
    tracker.log_metrics({k: v for k, v in scores.items() if isinstance(v, (int, float))}, step=0)
    tracker.end_run("FINISHED")
    return scores
