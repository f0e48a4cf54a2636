"""Does a LaCT model use its fast weights? RULER NIAH with the fast-weight updates on and off.

`fast_weights_frozen(model)` is a context manager that switches every `LaCTLayer` of a model to
`update_fast_weights = False`: the fast weights are never written, so each token reads the
learnable initial weights (a fixed SwiGLU of its query) and the branch holds no memory of the
sequence; sliding-window attention, the MLPs and everything else are unchanged. On exit the layers
are restored. Retrieval that survives the switch goes through the window (with L layers, tokens at
most L * (window - 1) back); retrieval that disappears went through the fast weights.

`ablation_scores` evaluates one model on the study's NIAH items (`refine.eval.suites`: the items of
`refine eval niah` and its scorer, greedy decoding by `refine.eval.generate`) once as
it is and once frozen, in one process, on the same items. `ablation_rows` turns the two into the
table: one row per variant (and the paper's groups, e.g. S = the mean of the single-needle variants)
and context length, with the accuracy on, off, the difference on - off, and whether the length
exceeds the attention window (`beyond_window`) and the receptive field of the windows stacked over
the layers (`beyond_receptive_field`).

`python -m refine.eval.ablation --config C --model-dir M [M2 ...] --out table.csv` writes
one JSON per model (`--json-dir`) and the table of all of them (the `ablation` rule,
`workflow/rules/ablation.smk`).

Deviations from an ablation by hand (e.g. the lr_proj weight set to 0 and its bias to -30): the
learning rates are not merely tiny but the update is skipped, so the frozen model equals exactly
the same weights with a chunk longer than the sequence (tested); no partial-credit metrics (the
accuracy is what the check reads), so the cells are averaged here rather than by the suite's `aggregate`.
"""

from __future__ import annotations

import argparse
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

log = logging.getLogger(__name__)

SUITE = "niah"  # the suite the ablation evaluates (its items, scorer and aggregation)
ARMS = ("on", "off")  # fast-weight updates as trained / frozen


def lact_layers(model) -> list:
    """The `LaCTLayer` modules of a model (ValueError if it has none: not a LaCT model)."""
    from refine.models.lact import LaCTLayer

    layers = [m for m in model.modules() if isinstance(m, LaCTLayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LaCT layer: the fast-weight ablation needs a LaCT model")
    return layers


@contextmanager
def fast_weights_frozen(model):
    """Within the block, `model`'s fast weights are never updated (see the module docstring)."""
    layers = lact_layers(model)
    before = [layer.update_fast_weights for layer in layers]
    for layer in layers:
        layer.update_fast_weights = False
    try:
        yield model
    finally:
        for layer, flag in zip(layers, before, strict=True):
            layer.update_fast_weights = flag


def _niah_metrics(model, tokenizer, items, batch_size: int) -> dict[str, float]:
    from refine.eval.generate import greedy_generate
    from refine.eval.suites import get_suite

    suite = get_suite(SUITE)
    predictions: dict[int, str] = {}
    by_budget: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        by_budget.setdefault((item.max_new_tokens, tuple(item.stop_strings)), []).append(i)
    for (budget, stops), idx in by_budget.items():
        outs = greedy_generate(model, tokenizer, [items[i].prompt for i in idx], budget, batch_size,
                               stop_strings=list(stops) or None)  # fmt: skip
        predictions.update(zip(idx, outs, strict=True))
    cells: dict[tuple[str, int], list[float]] = {}
    for i, item in enumerate(items):
        cells.setdefault((item.group, item.length), []).append(suite.score(item, predictions[i]))
    return {f"{group}/len{length}/score": 100.0 * sum(s) / len(s) for (group, length), s in sorted(cells.items())}


def ablation_scores(cfg: dict, model_dir: str | Path, variants: list[str] | None = None) -> dict:
    """NIAH metrics of one LaCT model with its fast-weight updates on and off:
    {"model_dir", "window_size", "chunk_size", "num_layers", "items", "on": {metric: value}, "off": {...}}
    (metrics `<variant>/len<L>/score`: the mean score ×100, as `refine eval niah` names them).
    `variants`: only these NIAH variants (default: all the study evaluates)."""
    from refine.data.tokenizer import load_tokenizer
    from refine.eval.suites import get_suite
    from refine.models.registry import load_model

    torch.set_num_threads(cfg["threads"])
    model = load_model(model_dir, cfg["device"]).eval()
    lact_layers(model)  # fail before decoding anything
    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = "left"
    suite = get_suite(SUITE)
    items = suite.prepare(suite.load_items(cfg), tokenizer)
    if variants:
        items = [item for item in items if item.group in variants]
        if not items:
            raise ValueError(f"ablation: no NIAH item of the variants {variants}")
    batch = cfg["eval"]["batch_size"]
    with torch.no_grad():
        on = _niah_metrics(model, tokenizer, items, batch)
        with fast_weights_frozen(model):
            off = _niah_metrics(model, tokenizer, items, batch)
    mc = model.config
    return {"model_dir": str(model_dir), "window_size": mc.window_size, "chunk_size": mc.lact_chunk_size,
            "num_layers": mc.num_hidden_layers, "items": len(items), "on": on, "off": off}  # fmt: skip


def ablation_rows(record: dict, model: str, run: str) -> list[dict]:
    """Table rows of one `ablation_scores` record: per variant and per NIAH group of the paper
    (mean of its variants present) and context length: on, off, difference = on - off (points)."""
    from refine.eval.suites.niah import NIAH_GROUPS

    cells: dict[tuple[str, int], dict[str, float]] = {}
    for arm in ARMS:
        for name, value in record[arm].items():
            parts = name.split("/")
            if len(parts) == 3 and parts[1].startswith("len"):
                cells.setdefault((parts[0], int(parts[1][3:])), {})[arm] = value
    groups = {}
    for group, variants in NIAH_GROUPS.items():
        lengths = sorted({length for v, length in cells if v in variants})
        for length in lengths:
            present = [cells[(v, length)] for v in variants if (v, length) in cells]
            groups[(group, length)] = {arm: sum(c[arm] for c in present) / len(present) for arm in ARMS}
    window, layers = record["window_size"], record["num_layers"]
    rows = []
    for (variant, length), arms in [*sorted(cells.items()), *groups.items()]:
        rows.append({"model": model, "run": run, "variant": variant, "length": length, "on": arms["on"],
                     "off": arms["off"], "difference": arms["on"] - arms["off"], "window_size": window,
                     "chunk_size": record["chunk_size"], "beyond_window": length > window,
                     "beyond_receptive_field": length > layers * (window - 1)})  # fmt: skip
    return rows


def ablation_table(records: list[tuple[dict, str, str]]) -> pd.DataFrame:
    """All models' rows: `records` holds (ablation_scores record, model name, run name)."""
    return pd.DataFrame([row for record, model, run in records for row in ablation_rows(record, model, run)])


def model_and_run(model_dir: str | Path) -> tuple[str, str]:
    """(model, run) of a study model directory .../<model>/<run>/model."""
    run_dir = Path(model_dir).parent
    return run_dir.parent.name, run_dir.name


def write_ablation(cfg: dict, model_dirs: list[str], variants: list[str] | None, json_dir: Path | None,
                   out: Path) -> pd.DataFrame:  # fmt: skip
    """Score every model directory with its updates on and off; write the table (and the records)."""
    records = []
    for model_dir in model_dirs:
        record = ablation_scores(cfg, model_dir, variants)
        model, run = model_and_run(model_dir)
        if json_dir:
            json_dir.mkdir(parents=True, exist_ok=True)
            (json_dir / f"{model}-{run}.json").write_text(json.dumps(record, indent=1))
        records.append((record, model, run))
    table = ablation_table(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.2f")
    log.info("fast-weight ablation:\n%s", table.to_string(index=False))
    return table


def main(argv: list[str] | None = None) -> None:
    from refine.study import load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="the resolved study config")
    p.add_argument("--model-dir", nargs="+", action="extend", required=True, help="LaCT model directories")
    p.add_argument("--variants", nargs="+", help="NIAH variants (default: the study's)")
    p.add_argument("--json-dir", type=Path, help="write <model>-<run>.json records here")
    p.add_argument("--out", type=Path, required=True, help="the table (CSV)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    write_ablation(load_config(args.config), args.model_dir, args.variants, args.json_dir, args.out)


if __name__ == "__main__":
    main()
