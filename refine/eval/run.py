"""`refine eval <suite>` (niah, qa, longbench: `refine.eval.suites`): decode, score and record one model.

Writes into the output directory:
- `predictions.jsonl`: one line per item (id, group, length, depth, prompt tokens, prediction,
  gold answers, score, partial credit) so every number traces back to outputs;
- `scores.json`: {"suite", "ttt", "model_dir", "metrics": {flat name: value}}; the same flat
  metrics go to MLflow (experiment '<study>/eval'), so tables and MLflow agree.

The suite decides what is evaluated and how it is counted: its items (`load_items`, then `prepare`
once the tokenizer is known: LongBench narrows them to `eval.longbench.subset`), the score of each
prediction, whether partial credit is scored, and the flat metrics (`aggregate`). By default these
are `<group>/len<L>/score` (×100) and `<group>/score` (mean over lengths) and, for the partial-credit
metrics of short answers (NIAH, QA), `<group>/len<L>/first_token_acc`, `char_acc` and
`answer_logprob`; LongBench: `<task>/score` (official) and `avg/score` (the mean of the tasks).
Prompts are cut as each item says (`refine.eval.longbench`: `eval.longbench.protocol`). Test-time training
(`--ttt sft|refine`) adapts on each prompt first
(`refine.train.ttt`); its per-update metrics are logged as `ttt/<name>` means.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from refine.data.tokenizer import load_tokenizer
from refine.eval.config import eval_config
from refine.eval.generate import continuation_ids, greedy_generate, greedy_generate_scored
from refine.eval.longbench import newline_token_id, official_truncate, truncate_middle
from refine.eval.scoring import best_over_references, char_accuracy, first_token_accuracy
from refine.eval.suites import SUITES, Item, get_suite
from refine.hub import refresh_model_card_scores
from refine.models.registry import load_model
from refine.names import TTT_MODES
from refine.tracking import MLflowTracker, tracking_uri_for, training_run_tags
from refine.train.ntp import NTPMethod
from refine.train.ttt import ttt_generate

log = logging.getLogger(__name__)


def _truncate(items: list[Item], tokenizer) -> list[str]:
    prompts = []
    for item in items:
        if item.prompt_token_limit is None:
            prompts.append(item.prompt)
            continue
        if item.truncation == "official":
            prompts.append(official_truncate(item.prompt, tokenizer, item.prompt_token_limit))
            continue
        ids = tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
        prompts.append(tokenizer.decode(truncate_middle(ids, item.prompt_token_limit)))
    return prompts


def _decoder(model, tokenizer, items: list[Item], prompts: list[str], batch_size: int, scored: bool):
    """decode(indices) -> (predictions, log-probabilities of each item's first gold answer, or None)."""

    def decode(indices: list[int]) -> tuple[list[str], list[float] | None]:
        preds: dict[int, str] = {}
        logps: dict[int, float] = {}
        by_budget = defaultdict(list)  # one generate call per (budget, stops, newline stop, min new)
        for i in indices:
            item = items[i]
            key = (item.max_new_tokens, tuple(item.stop_strings), item.stop_on_newline_token, item.min_new_tokens)
            by_budget[key].append(i)
        for (budget, stops, newline_stop, min_new), idx in by_budget.items():
            kwargs = {"stop_strings": list(stops) or None, "min_new_tokens": min_new,
                      "stop_token_ids": [newline_token_id(tokenizer)] if newline_stop else None}  # fmt: skip
            batch_prompts = [prompts[i] for i in idx]
            if scored:
                gold = [items[i].answers[0] for i in idx]
                texts, scores = greedy_generate_scored(model, tokenizer, batch_prompts, gold, budget, batch_size,
                                                       **kwargs)  # fmt: skip
                logps.update(zip(idx, scores, strict=True))
            else:
                texts = greedy_generate(model, tokenizer, batch_prompts, budget, batch_size, **kwargs)
            preds.update(zip(idx, texts, strict=True))
        return [preds[i] for i in indices], [logps[i] for i in indices] if scored else None

    return decode


def _partial_credit(tokenizer, items, prompts, predictions, logps) -> list[dict]:
    rows = []
    for item, prompt, pred, lp in zip(items, prompts, predictions, logps, strict=True):
        pred_ids = continuation_ids(tokenizer, prompt, pred) if pred.strip() else []
        gold_ids = continuation_ids(tokenizer, prompt, item.answers[0])
        rows.append(
            {
                "first_token_acc": first_token_accuracy(pred_ids, gold_ids),
                "char_acc": best_over_references(char_accuracy, pred, item.answers),
                "answer_logprob": lp,
            }
        )
    return rows


def run_eval(cfg: dict, suite: str, model_dir: str | Path, out_dir: str | Path, ttt: str = "none",
             seed: int = 0) -> dict:  # fmt: skip
    if ttt not in TTT_MODES:
        raise ValueError(f"--ttt: expected one of {TTT_MODES}, got {ttt!r}")
    started = time.time()  # the MLflow run's start: the evaluation's real duration (`_write`)
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(seed)
    spec = cfg["eval"]
    suite_def = get_suite(suite)
    model = load_model(model_dir, cfg["device"]).eval()
    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"
    items = suite_def.prepare(suite_def.load_items(cfg), tokenizer)
    prompts = _truncate(items, tokenizer)
    decode = _decoder(model, tokenizer, items, prompts, spec["batch_size"], suite_def.partial_credit)

    def evaluate(indices: list[int]) -> list[dict]:
        """Decode, score and (if the suite asks) partial credit for these items with the current weights."""
        preds, logps = decode(indices)
        rows = [{"prediction": p, "score": suite_def.score(items[i], p)} for i, p in zip(indices, preds, strict=True)]
        if suite_def.partial_credit:
            sub_items, sub_prompts = [items[i] for i in indices], [prompts[i] for i in indices]
            credit = _partial_credit(tokenizer, sub_items, sub_prompts, preds, logps)
            for row, extra in zip(rows, credit, strict=True):
                row.update(extra)
        return rows

    ttt_metrics: list[dict] = []
    if ttt == "none":
        with torch.no_grad():
            rows = evaluate(list(range(len(items))))
    else:
        tspec = spec["ttt"]
        method = NTPMethod() if ttt == "sft" else _ttt_refine(cfg)
        rows, ttt_metrics = ttt_generate(
            model, tokenizer, prompts, evaluate, method, tspec["steps"], tspec["lr"], tspec["reset"],
            tspec["batch_size"], tspec["mini_batch_size"], tspec["weight_decay"],
        )
    metrics = suite_def.aggregate(items, rows)
    for name in sorted({k for m in ttt_metrics for k in m}):
        metrics[f"ttt/{name}"] = float(np.mean([m[name] for m in ttt_metrics if name in m]))
    _write(out_dir, suite, ttt, model_dir, items, rows, metrics, cfg, started)
    return metrics


def eval_dir(out_root: str | Path, suite: str, model_dir: str | Path, ttt: str) -> Path:
    """<out_root>/<suite>/<model>/<run>/ttt-<mode> for a model directory .../<model>/<run>/model."""
    run_dir = Path(model_dir).parent
    return Path(out_root) / suite / run_dir.parent.name / run_dir.name / f"ttt-{ttt}"


def run_suites(cfg: dict, suites: list[str], model_dir: str | Path, out_root: str | Path, ttt: str = "none",
               seed: int = 0) -> dict:  # fmt: skip
    """Evaluate one model on several suites in one process (the `ntp` suite: held-out loss)."""
    unknown = sorted(set(suites) - {"ntp", *SUITES})
    if unknown or not suites:
        raise ValueError(f"suites: expected some of ntp,{','.join(SUITES)}, got {suites}")
    results = {}
    for suite in suites:
        if suite == "ntp":
            from refine.eval.ntp import run_ntp_eval

            run_dir = Path(model_dir).parent
            out = Path(out_root) / "ntp" / run_dir.parent.name / f"{run_dir.name}.json"
            heldout = Path(cfg["results_dir"]) / "data" / "heldout.npy"
            results["ntp"] = run_ntp_eval(cfg, model_dir, heldout, out)
        else:
            results[suite] = run_eval(cfg, suite, model_dir, eval_dir(out_root, suite, model_dir, ttt), ttt, seed)
    return results


def _ttt_refine(cfg: dict):
    from refine.train.refine import RefineMethod

    return RefineMethod(eval_config(cfg, "ttt").refine)


def _write(out_dir, suite, ttt, model_dir, items, rows, metrics, cfg, started: float) -> None:
    """predictions.jsonl, scores.json and the MLflow run: tagged with what it evaluates (the
    trained run's stage / method / seed / id, the TTT mode) so the UI groups eval runs by method,
    and started at `started` so its duration is the evaluation's; the model card's scores section
    is refreshed from every evaluation of the model so far (`refine.hub`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for item, row in zip(items, rows, strict=True):
            rec = {"id": item.id, "group": item.group, "length": item.length, "depth": item.depth,
                   "answers": item.answers, **row}  # fmt: skip
            f.write(json.dumps(rec) + "\n")
    run_dir = Path(model_dir).parent
    wall = time.time() - started
    summary = {"suite": suite, "ttt": ttt, "ttt_reset": cfg["eval"]["ttt"]["reset"], "model_dir": str(model_dir),
               "model": run_dir.parent.name, "run": run_dir.name, "wall_time_s": wall, "metrics": metrics}  # fmt: skip
    trained = training_run_tags(model_dir)
    tags = {"suite": suite, "model": run_dir.parent.name, "run": run_dir.name, "ttt": ttt,
            "ttt_reset": str(cfg["eval"]["ttt"]["reset"]), **trained}  # fmt: skip
    tracker = MLflowTracker(tracking_uri_for(Path(cfg["results_dir"])), f"{cfg['study']}/eval")
    tracker.start_run(f"{suite}/{run_dir.parent.name}/{run_dir.name}/ttt-{ttt}",
                      {"suite": suite, "ttt": ttt, "model_dir": str(model_dir)}, tags=tags,
                      start_time=started, resume=False)  # fmt: skip
    tracker.log_metrics({**metrics, "wall_time_s": wall}, step=0)
    summary["mlflow_run_id"] = tracker.run_id
    summary["trained_run"] = trained
    tracker.end_run("FINISHED")
    (out_dir / "scores.json").write_text(json.dumps(summary, indent=2))
    refresh_model_card_scores(model_dir, cfg)
