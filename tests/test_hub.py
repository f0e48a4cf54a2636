"""What a researcher finds in a model directory and in MLflow (issue 11): every trained model loads
with the transformers Auto classes on a fresh Python after `import refine` and carries a model card;
the training run's MLflow id is recorded beside it; an evaluation run is tagged with what it
evaluates (stage / method / seed / TTT mode / training run id) and shows its real duration."""

import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from mlflow import MlflowClient

from refine.config import REPO_ROOT, deep_merge
from refine.data.build import build_data
from refine.eval.run import _write
from refine.eval.suites import get_suite
from refine.models.registry import load_model
from refine.study import load_config
from refine.tracking import tracking_uri_for
from refine.train.run import run_stage

TINY = {
    "data": {"pretrain": {"num_docs": 64, "seq_len": 32}, "midtrain": {"num_docs": 8, "seq_len": 64},
             "heldout": {"num_docs": 4, "seq_len": 64}},
    "pretrain": {"train": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 10, "log_every": 1}},
}  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A results folder with a tiny pretrained DeltaNet and LaCT (the smoke config's models)."""
    root = tmp_path_factory.mktemp("hub")
    cfg = deep_merge(load_config(REPO_ROOT / "config" / "smoke.yaml"), copy.deepcopy(TINY))
    cfg["results_dir"] = str(root / "results")
    build_data(cfg, root / "results" / "data")
    for model in ("deltanet", "lact"):
        run_stage(cfg, "pretrain", model, root / "results" / "models" / model / "base")
    return cfg, root / "results"


FRESH = """
import json, sys
import refine
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(path).eval()
tokenizer = AutoTokenizer.from_pretrained(path)
ids = tokenizer("the key is 42", return_tensors="pt").input_ids
with torch.no_grad():
    logits = model(ids).logits
print(json.dumps({"cls": type(model).__name__, "ids": ids.tolist(), "logits": logits.flatten().tolist()}))
"""


@pytest.mark.parametrize("model", ["deltanet", "lact"])
def test_a_model_directory_loads_with_the_auto_classes_on_a_fresh_python(study, model, tmp_path):
    _, results = study
    model_dir = results / "models" / model / "base" / "model"
    script = tmp_path / "load.py"
    script.write_text(FRESH)
    done = subprocess.run([sys.executable, str(script), str(model_dir)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cls"] == {"deltanet": "DeltaNetForCausalLM", "lact": "LaCTForCausalLM"}[model]
    reference = load_model(model_dir, "cpu").eval()  # the project's own loader: the same numbers
    with torch.no_grad():
        expected = reference(torch.tensor(out["ids"])).logits.flatten()
    assert torch.allclose(torch.tensor(out["logits"]), expected, atol=1e-5)


def _card(model_dir: Path) -> tuple[dict, str]:
    text = (model_dir / "README.md").read_text()
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def test_every_trained_model_has_a_model_card_and_its_mlflow_run_id(study):
    cfg, results = study
    client = MlflowClient(tracking_uri_for(results))
    for model, arch in (("deltanet", "delta_net"), ("lact", "lact")):
        run_dir = results / "models" / model / "base"
        meta, body = _card(run_dir / "model")
        assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
        assert {"refine", arch, "pretrain", "ntp"} <= set(meta["tags"])
        final = json.loads((run_dir / "final_metrics.json").read_text())
        assert f"| optimizer steps | {final['optimizer_steps']:.4g} |" in body
        assert f"| tokens | {final['tokens']:.4g} |" in body
        assert "pretrain split" in body and "Not evaluated yet." in body
        info = json.loads((run_dir / "run.json").read_text())
        run = client.get_run(info["mlflow_run_id"])
        assert run.info.run_name == f"{model}/pretrain-ntp" and run.data.tags["stage"] == "pretrain"


def _niah_result(n=4):
    items = [SimpleNamespace(id=f"niah_single_1/64/None/{i}", group="niah_single_1", length=64, depth=[50.0],
                             answers=["7"]) for i in range(n)]  # fmt: skip
    rows = [{"prediction": "7" if i % 2 else "x", "score": float(i % 2), "first_token_acc": float(i % 2),
             "char_acc": float(i % 2), "answer_logprob": -1.0} for i in range(n)]  # fmt: skip
    return items, rows, get_suite("niah").aggregate(items, rows)


def test_an_eval_run_is_tagged_with_what_it_evaluates_and_lasts_as_long_as_the_evaluation(study):
    cfg, results = study
    model_dir = results / "models" / "deltanet" / "base" / "model"
    out_dir = results / "eval" / "niah" / "deltanet" / "base" / "ttt-none"
    items, rows, metrics = _niah_result()
    for _ in range(2):  # a rerun replaces the run: one live run per evaluation, with its own duration
        started = time.time() - 1.5
        _write(out_dir, "niah", "none", model_dir, items, rows, metrics, cfg, started)
    rec = json.loads((out_dir / "scores.json").read_text())
    client = MlflowClient(tracking_uri_for(results))
    run = client.get_run(rec["mlflow_run_id"])
    train_info = json.loads((model_dir.parent / "run.json").read_text())
    tags = run.data.tags
    assert {k: tags[k] for k in ("stage", "method", "seed", "ttt", "suite", "model")} == {
        "stage": "pretrain", "method": "ntp", "seed": str(train_info["seed"]), "ttt": "none", "suite": "niah",
        "model": "deltanet"}  # fmt: skip
    assert tags["train_run_id"] == train_info["mlflow_run_id"]
    assert run.info.end_time - run.info.start_time >= 1500
    assert run.data.metrics["wall_time_s"] == pytest.approx(rec["wall_time_s"]) and rec["wall_time_s"] >= 1.5
    live = client.search_runs([run.info.experiment_id], f"attributes.run_name = '{run.info.run_name}'")
    assert [r.info.run_id for r in live] == [run.info.run_id]
    # the model card now carries the score the study's table computes (S = 50.0 here)
    _, body = _card(model_dir)
    assert "| niah | none | S 50.0 |" in body and "Not evaluated yet." not in body
