"""`refine eval ntp`: held-out validation loss and next-token accuracy of a model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from refine.data.dataset import TokenDataset
from refine.models.registry import load_model
from refine.tracking import MLflowTracker, tracking_uri_for
from refine.train.ntp import evaluate_ntp


def run_ntp_eval(cfg: dict, model_dir: str | Path, data: str | Path, out: str | Path) -> dict:
    torch.set_num_threads(cfg["threads"])
    model = load_model(model_dir, cfg["device"])
    scores = evaluate_ntp(model, TokenDataset(data), cfg["eval"]["ntp"]["batch_size"])
    run_dir = Path(model_dir).parent
    scores = {"model_dir": str(model_dir), **scores}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(scores, indent=2))
    tracker = MLflowTracker(tracking_uri_for(Path(cfg["results_dir"])), f"{cfg['study']}/eval")
    tracker.start_run(
        f"ntp/{run_dir.parent.name}/{run_dir.name}", {"model_dir": str(model_dir)}, tags={"suite": "ntp"}
    )
    tracker.log_metrics({k: v for k, v in scores.items() if isinstance(v, (int, float))}, step=0)
    tracker.end_run("FINISHED")
    return scores
