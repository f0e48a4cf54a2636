"""Hub-shaped model directories: the Auto classes know the project's architectures after `import
refine`, and every trained model carries a model card.

A model directory (`results/models/<model>/<run>/model/`) is what `save_pretrained` writes plus
the study's tokenizer, so on a fresh Python

    import refine
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(path); tokenizer = AutoTokenizer.from_pretrained(path)

loads it. transformers finds an architecture through `AutoConfig.register`, which needs the config
class, and importing LaCT (and fla's DeltaNet / Gated DeltaNet) costs seconds, which `import refine`
must not pay (every job of the DAG imports it). So the registration is deferred: `install()` (run
by `import refine`) hooks the import of transformers' `configuration_auto` and wraps
`AutoConfig.from_pretrained`, which every `Auto*.from_pretrained` of a directory goes through; its
first call imports `fla.models` (registers DeltaNet / Gated DeltaNet) and `refine.models.lact`
(registers LaCT), and, in a process that has not chosen an fla backend yet, picks fla's
pure-PyTorch one when no GPU is there (`refine.models.backend.activate`), so the loaded model also
runs a forward pass. Nothing else of
transformers is changed.

The model card (`README.md`, the hub's convention: YAML front matter with `library_name`,
`pipeline_tag`, `tags`, then Markdown) says what the model is: architecture, stage, method, seed,
the model it started from, its training data, optimizer steps, tokens and wall time, and the
evaluation scores once evaluated. `write_model_card` writes it after training;
`refresh_model_card_scores` (called by each evaluation) rewrites its scores section from every
`scores.json` of that model, under a file lock, so concurrent evaluations of one model leave the
same card in any order.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.abc
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_registered = False


def register_architectures() -> None:
    """Register DeltaNet, Gated DeltaNet (fla) and LaCT with the transformers Auto classes (once)."""
    global _registered
    if _registered:
        return
    _registered = True
    import torch

    from refine.models import backend

    if backend.active_backend() is None:  # a process that chose its backend keeps it
        backend.activate("cuda" if torch.cuda.is_available() else "cpu")
    import fla.models  # noqa: F401  (registers DeltaNet / Gated DeltaNet)

    import refine.models.lact  # noqa: F401  (registers LaCT)


def _wrap_auto_config(module) -> None:
    auto_config = module.AutoConfig
    original = auto_config.__dict__["from_pretrained"].__func__
    if getattr(original, "_refine_registers", False):
        return

    @functools.wraps(original)
    def from_pretrained(cls, *args, **kwargs):
        register_architectures()
        return original(cls, *args, **kwargs)

    from_pretrained._refine_registers = True
    auto_config.from_pretrained = classmethod(from_pretrained)


class _AfterConfigAuto(importlib.abc.MetaPathFinder):
    """Finds transformers' configuration_auto with the other finders and wraps AutoConfig once it ran."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _CONFIG_AUTO:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_wrap(module):
            exec_module(module)
            _wrap_auto_config(module)

        spec.loader.exec_module = exec_then_wrap
        return spec


def install() -> None:
    """Make `AutoConfig.from_pretrained` (hence every Auto class) know the project's architectures."""
    if _CONFIG_AUTO in sys.modules:
        _wrap_auto_config(sys.modules[_CONFIG_AUTO])
    elif not any(isinstance(f, _AfterConfigAuto) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterConfigAuto())


# --- the model card -----------------------------------------------------------------------------

_SCORES_BEGIN = "<!-- refine:scores -->"
_SCORES_END = "<!-- /refine:scores -->"


@contextlib.contextmanager
def _card_lock(model_dir: Path) -> Iterator[None]:
    with open(model_dir.parent / ".model_card.lock", "a") as handle:  # beside the model folder, not in it
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _front_matter(meta: Mapping[str, Any]) -> str:
    lines = ["---"]
    for key, value in meta.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines += [f"- {json.dumps(v)}" for v in value]
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines + ["---", ""])


def model_card(info: Mapping[str, Any], final: Mapping[str, Any], scores_md: str) -> str:
    """The text of README.md. `info`: model, arch, stage, method, seed, base_model, data, run_name,
    mlflow_run_id, study; `final`: the run's final metrics (tokens, optimizer_steps, wall_time_s, loss)."""
    tags = ["refine", "fast-weights", str(info["arch"]), str(info["stage"]), str(info["method"])]
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation",
                            "tags": list(dict.fromkeys(tags))}  # fmt: skip
    if info.get("base_model_hub"):
        meta["base_model"] = info["base_model_hub"]
    rows = [
        ("architecture", info["arch"]),
        ("stage", info["stage"]),
        ("method", info["method"]),
        ("seed", info.get("seed")),
        ("started from", info.get("base_model") or "random initialisation"),
        ("training data", info.get("data")),
        ("optimizer steps", final.get("optimizer_steps")),
        ("tokens", final.get("tokens")),
        ("wall time (s)", final.get("wall_time_s")),
        ("final training loss", final.get("loss")),
        ("study / MLflow run", f"{info.get('study')} / {info.get('run_name')} ({info.get('mlflow_run_id')})"),
    ]

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "—" if value is None else str(value)

    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {cell(v)} |" for k, v in rows)])
    body = (
        f"# {info['model']} · {info['run']}\n\n"
        f"A tiny `{info['arch']}` causal language model of the REFINE study (reinforced fast weights with\n"
        "next-sequence prediction), trained by the `refine` pipeline. Load it with `import refine` first\n"
        "(it registers the architecture), then `AutoModelForCausalLM.from_pretrained(<this folder>)` and\n"
        "`AutoTokenizer.from_pretrained(<this folder>)`.\n\n"
        f"{table}\n\n## Evaluation\n\n{_SCORES_BEGIN}\n{scores_md}\n{_SCORES_END}\n"
    )
    return _front_matter(meta) + "\n" + body


def write_model_card(model_dir: str | Path, info: Mapping[str, Any], final: Mapping[str, Any],
                     cfg: dict | None = None) -> Path:  # fmt: skip
    """Write `<model_dir>/README.md` (with the scores already under `<results>/eval`, given `cfg`)."""
    model_dir = Path(model_dir)
    scores = scores_markdown(model_dir, cfg) if cfg is not None else None
    text = model_card(info, final, scores or "Not evaluated yet.")
    with _card_lock(model_dir):
        (model_dir / "README.md").write_text(text, encoding="utf-8")
    return model_dir / "README.md"


def scores_markdown(model_dir: str | Path, cfg: dict) -> str | None:
    """A Markdown table of the headline scores of every evaluation of `model_dir` under
    `<results>/eval/<suite>/<model>/<run>/ttt-<mode>/scores.json`, as the suites' tables compute
    them (the `_mean` columns, i.e. the mean over lengths, and LongBench's Avg)."""
    from refine.eval.suites import get_suite
    from refine.report.tables import load_scores

    run_dir = Path(model_dir).parent
    eval_root = Path(cfg["results_dir"]) / "eval"
    paths = sorted(eval_root.glob(f"*/{run_dir.parent.name}/{run_dir.name}/ttt-*/scores.json"))
    if not paths:
        return None
    lines = ["| suite | test-time training | score (%) |", "|---|---|---|"]
    for run in load_scores(paths):
        row = get_suite(run["suite"]).table([run], cfg).iloc[0]
        cols = [c for c in row.index if c == "Avg" or (c.endswith("_mean") and "_std" not in c)]
        values = ", ".join(f"{c.removesuffix('_mean')} {float(row[c]):.1f}" for c in cols)
        lines.append(f"| {run['suite']} | {run.get('ttt', 'none')} | {values} |")
    return "\n".join(lines)


def refresh_model_card_scores(model_dir: str | Path, cfg: dict) -> None:
    """Rewrite the scores section of `<model_dir>/README.md` (a model without a card is left alone)."""
    model_dir = Path(model_dir)
    card = model_dir / "README.md"
    if not card.exists():
        return
    with _card_lock(model_dir):
        text = card.read_text(encoding="utf-8")
        if _SCORES_BEGIN not in text or _SCORES_END not in text:
            log.warning("%s: no scores section to refresh", card)
            return
        head, rest = text.split(_SCORES_BEGIN, 1)
        _, tail = rest.split(_SCORES_END, 1)
        scores = scores_markdown(model_dir, cfg) or "Not evaluated yet."
        card.write_text(f"{head}{_SCORES_BEGIN}\n{scores}\n{_SCORES_END}{tail}", encoding="utf-8")
