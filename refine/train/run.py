"""The `refine train` stage: build or load a model, pick the method, run the shared loop.

Stages and methods (REFINE.md §2):
- pretrain: a tiny model from scratch on the generated pretraining split (NTP);
- midtrain --method sft: next-token SFT on long documents (the authors' baseline: one
  optimizer step per batch);
- midtrain --method sft_matched: SFT with as many optimizer steps and tokens as REFINE
  (its own `midtrain.sft_matched.train` section);
- midtrain --method refine: the REFINE update (`refine.train.refine.RefineMethod`);
- posttrain --method sft | nested_sft | nested_refine: answer-SFT on RULER-format QA items,
  with an inner NTP or REFINE step on the prompt context (`refine.train.posttrain`).

Every run logs params, per-step metrics, tokens, optimizer steps and wall time to MLflow
(experiment '<study>/<stage>') and to `metrics.tsv` in its output directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from refine.data.dataset import TokenDataset
from refine.models.registry import build_model, load_model
from refine.names import METHODS
from refine.rl.config import refine_config
from refine.tracking import MLflowTracker, NullTracker, tracking_uri_for
from refine.train.config import check_world_size, train_config
from refine.train.distributed import init_distributed, shutdown_distributed
from refine.train.loop import seed_everything, train
from refine.train.ntp import NTPMethod

log = logging.getLogger(__name__)

STAGE_METHODS = METHODS  # refine.names: the methods of each stage, defined once


def _method(cfg: dict, stage: str, method: str):
    if stage == "posttrain":
        from refine.train.posttrain import posttrain_method

        rcfg = refine_config(cfg, "posttrain.nested_refine.refine") if method == "nested_refine" else None
        return posttrain_method(method, rcfg)
    if method in ("ntp", "sft", "sft_matched"):
        return NTPMethod()
    from refine.train.refine import RefineMethod

    return RefineMethod(refine_config(cfg, f"{stage}.{method}.refine"))


def _dataset(cfg: dict, stage: str, data_dir: Path, model_dir: Path | None):
    if stage != "posttrain":
        return TokenDataset(data_dir / f"{stage}.npy")
    from refine.data.jsonl import read_jsonl
    from refine.train.posttrain import QADataset

    records = read_jsonl(data_dir / "eval" / "qa_train.jsonl")
    return QADataset(records, _tokenizer(data_dir), cfg["posttrain"]["max_answer_tokens"])


def run_stage(
    cfg: dict,
    stage: str,
    model_name: str,
    out: str | Path,
    method: str | None = None,
    seed: int | None = None,
    init: str | Path | None = None,
) -> dict:
    if stage not in STAGE_METHODS:
        raise ValueError(f"--stage: expected one of {sorted(STAGE_METHODS)}, got {stage!r}")
    method = method or STAGE_METHODS[stage][0]
    if method not in STAGE_METHODS[stage]:
        raise ValueError(f"--method: stage {stage} takes one of {STAGE_METHODS[stage]}, got {method!r}")
    if model_name not in cfg["models"]:
        raise ValueError(f"--model: {model_name!r} is not in the config's models {sorted(cfg['models'])}")
    torch.set_num_threads(cfg["threads"])
    entry = cfg["models"][model_name]
    if stage == "pretrain" and entry["pretrained"]:
        return import_pretrained(cfg, model_name, out)
    dist = init_distributed(cfg["device"])  # single-process unless launched by torchrun
    check_world_size(cfg, dist.world_size, [stage if stage == "pretrain" else f"{stage}.{method}"])
    device = dist.device
    results = Path(cfg["results_dir"])
    key = "pretrain.train" if stage == "pretrain" else f"{stage}.{method}.train"
    tcfg = train_config(cfg, key, seed=seed)
    data_dir = results / "data"
    dataset = _dataset(cfg, stage, data_dir, init)
    # Seed before anything draws randomness: torch seeds every process at random, so a model built
    # before this line would start from a different init in every run (the loop seeds again,
    # per rank, before its first step; every rank builds the same init here).
    seed_everything(tcfg.seed)
    if init is not None:
        model = load_model(init, device, dtype=torch.float32)  # fp32 master weights, any checkpoint dtype
    elif stage == "pretrain":
        tokenizer = _tokenizer(data_dir)
        model = build_model(entry["arch"], len(tokenizer), entry["config"], device, tokenizer=tokenizer)
    else:
        raise ValueError("--init: stages after pretraining start from a model directory")
    run_name = f"{model_name}/{stage}-{method}" + (f"-s{seed}" if seed is not None else "")
    tracker = MLflowTracker(tracking_uri_for(results), f"{cfg['study']}/{stage}") if dist.is_main else NullTracker()
    params = {"model": model_name, "stage": stage, "method": method, "seed": tcfg.seed, "train": vars(tcfg)}
    if "refine" in cfg[stage].get(method, {}):
        params["refine"] = cfg[stage][method]["refine"]
    tracker.start_run(run_name, params, tags={"model": model_name, "stage": stage, "method": method})
    try:
        final = train(model, _method(cfg, stage, method), dataset, tcfg, Path(out), tracker, device=device, dist=dist)
    except BaseException:
        tracker.end_run("FAILED")
        shutdown_distributed()
        raise
    run_id = getattr(tracker, "run_id", None)  # the MLflow run the evaluations of this model link to
    tracker.end_run("FINISHED")
    if dist.is_main:
        _tokenizer(data_dir).save_pretrained(str(Path(out) / "model"))
        info = {"run_name": run_name, "mlflow_run_id": run_id, **params}
        (Path(out) / "run.json").write_text(json.dumps(info, indent=2, default=str))
        _write_card(cfg, Path(out), info, final, init)
    shutdown_distributed()
    return final


def import_pretrained(cfg: dict, model_name: str, out: str | Path) -> dict:
    """The `pretrain` stage of a model with a checkpoint: load it (hub name or local directory)
    and save it as the study's base model, with the study's tokenizer. No training."""
    entry = cfg["models"][model_name]
    source = entry["pretrained"]
    if entry["checkpoint_format"] == "official_lact":
        from refine.models.lact_convert import load_official_lact

        model = load_official_lact(source, device="cpu")
    else:
        model = load_model(source, "cpu", dtype=None)  # copied as stored
    out = Path(out)
    model.save_pretrained(str(out / "model"))
    _tokenizer(Path(cfg["results_dir"]) / "data").save_pretrained(str(out / "model"))
    final = {"pretrained": str(source), "tokens": 0, "optimizer_steps": 0, "wall_time_s": 0.0}
    (out / "final_metrics.json").write_text(json.dumps(final, indent=2))
    info = {"run_name": f"{model_name}/pretrain-imported", "model": model_name, "stage": "pretrain",
            "method": "imported", "seed": None}  # fmt: skip
    _write_card(cfg, out, info, final, source)
    log.info("imported %s as %s", source, out / "model")
    return final


def _data_description(cfg: dict, stage: str) -> str:
    if stage == "posttrain":
        qa = cfg["eval"]["qa"]
        return (f"RULER-format QA training items ({qa.get('train_source')}, {qa.get('train_samples')} samples, "
                f"answers ≤ {cfg['posttrain']['max_answer_tokens']} tokens)")  # fmt: skip
    spec = cfg["data"].get(stage) or {}
    values = ", ".join(f"{k} {v}" for k, v in spec.items() if isinstance(v, int | float | str) and k != "source")
    return f"the study's {stage} split ({spec.get('source', 'generated')}: {values})"


def _write_card(cfg: dict, out: Path, info: dict, final: dict, init) -> None:
    """The model card of `<out>/model` (refine.hub): what the model is and how it was trained."""
    from refine.hub import write_model_card

    results = Path(cfg["results_dir"])
    entry = cfg["models"][info["model"]]
    base = None
    if init is not None:  # a local directory is named relative to the results folder, a hub name as is
        path = Path(init).resolve()
        base = str(path.relative_to(results.resolve())) if path.is_relative_to(results.resolve()) else str(init)
    arch = entry.get("arch") or json.loads((out / "model" / "config.json").read_text()).get("model_type")
    card = {**info, "arch": arch, "run": out.name, "study": cfg["study"], "base_model": base,
            "base_model_hub": str(init) if init is not None and not Path(init).exists() else None,
            "data": "none (imported checkpoint)" if info["method"] == "imported"
            else _data_description(cfg, info["stage"])}  # fmt: skip
    write_model_card(out / "model", card, final, cfg)


def _tokenizer(data_dir: Path):
    from refine.data.tokenizer import load_tokenizer

    return load_tokenizer(data_dir / "tokenizer")
