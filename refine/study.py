"""Study-level validation: one config checked as a whole, above the per-concern configs.

`refine.config` reads, merges and schema-checks config files (generic, it imports nothing of the
package but `refine.names`); each concern has its dataclass (`refine.data.corpus.CorpusConfig`,
`refine.train.config.TrainConfig`, `refine.rl.config.RefineConfig`, the evaluation sections of
`refine.eval.config`). This module puts them together: `validate_config` (called by
`workflow/rules/common.smk` at DAG build and by every `refine` command) schema-checks the config,
fills each dataclass section's missing keys from its dataclass, field by field (nested blocks such
as `eval.ttt.refine` too), builds every dataclass once and runs the checks that span sections.
Errors are one line naming the file and the key path (`midtrain.refine.rollout_len`).

Checked at load time as well (so a bad study stops before its first job):
- values given on Snakemake's command line arrive as strings (`--config seeds='[0]'` gives
  `['0']`, nested values too): a string where the schema or the dataclass field wants a number,
  a boolean or null is read as YAML (`refine.config.coerce_strings`/`coerce_fields`), so the
  README's override forms work;
- `models.<m>.config` against the fields of the model's config class, read from its source
  (`refine.config.check_model_config`: no fla/transformers import at DAG build);
- every source path (`data.<split>.source`, `tokenizer.path`, `models.<m>.pretrained`,
  `eval.qa.source` / `train_source`, `eval.longbench.source`, `eval.niah.essay_dir`): a value that
  is not an existing path is accepted only when it looks like a hub name (`owner/name`, no file
  suffix, no local folder called `owner`), otherwise "not found" (`check_sources`);
- the evaluation sections (`refine.eval.config`: LongBench tasks against the official task table,
  a real `eval.qa.source` without `eval.qa.train_source`, ...), every task of a local LongBench
  directory having one non-empty file, global batch sizes against the job's processes, and each
  REFINE section against the shortest sequence it meets.

The module sits above the per-concern configs and below the trainers (the memory estimator's
command line, `python -m refine.train.memory`, validates a study with it); see tests/test_layers.py.
"""

from __future__ import annotations

from pathlib import Path

from refine.config import (
    ConfigError,
    build_dataclass,
    check_model_config,
    check_source,
    coerce_fields,
    config_section,
    deep_merge,
    fill_dataclass_defaults,
    read_layered_config,
    validate_schema,
)
from refine.data.corpus import CorpusConfig
from refine.data.longbench_spec import find_task_file
from refine.eval.config import EVAL_SECTIONS, QA_KEYWORD_SOURCES, eval_config
from refine.names import METHODS, STAGES
from refine.rl.config import RefineConfig, refine_config
from refine.train.config import TrainConfig, check_world_size, train_config, training_processes


def validate_config(cfg: dict, source: str = "<config>", check_paths: bool = True) -> dict:
    """Validate `cfg` against the schema (filling defaults) and build every dataclass once.
    check_paths=False skips the existence checks of local sources (for comparing configs whose
    data is not there, e.g. the rehearsal's before its assets are written)."""
    cfg = validate_schema(cfg, source)
    check_combinations(cfg, source, check_paths)
    return cfg


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read (with its `extends:` chain), merge `overrides` (nested dict) into, and validate a YAML config file."""
    cfg = read_layered_config(path)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate_config(cfg, str(path))


def _has(cfg: dict, key: str) -> bool:
    try:
        config_section(cfg, key)
    except ConfigError:
        return False
    return True


def _coerce_section(cfg: dict, key: str, cls) -> None:
    """Rewrite the dataclass section `key` of `cfg` with `coerce_fields` (the resolved config
    every job reads then holds numbers, not the strings of the command line)."""
    *parents, last = key.split(".")
    node = config_section(cfg, ".".join(parents)) if parents else cfg
    if isinstance(node.get(last), dict):
        node[last] = coerce_fields(cls, node[last])


def method_sections(cfg: dict) -> list[str]:
    """The stage sections of a study: 'pretrain' and '<stage>.<method>' of every method it defines."""
    sections = []
    for stage in STAGES:
        if stage == "pretrain":
            sections.append(stage)
            continue
        body = cfg.get(stage, {})
        sections += [f"{stage}.{m}" for m in body if m in METHODS[stage] and isinstance(body[m], dict)]
    return sections


def check_combinations(cfg: dict, source: str = "<config>", check_paths: bool = True) -> None:
    """Fill the evaluation sections from their dataclasses and build every dataclass the study uses,
    so impossible combinations fail at load time (rewrites `cfg` in place)."""
    _coerce_section(cfg, "corpus", CorpusConfig)
    evals = cfg.setdefault("eval", {})
    for name, cls in EVAL_SECTIONS.items():  # defaults from the dataclasses, field by field
        if isinstance(evals.get(name, {}), dict):
            evals[name] = fill_dataclass_defaults(cls, coerce_fields(cls, evals.get(name, {})))
    build_dataclass(CorpusConfig, dict(cfg.get("corpus", {})), "corpus", source)
    for split, spec in cfg["data"].items():  # a generated split's own corpus (refine.data.build.corpus_config)
        if spec and spec.get("corpus"):
            values = {**cfg.get("corpus", {}), **spec["corpus"], "doc_tokens": spec["seq_len"]}
            build_dataclass(CorpusConfig, values, f"data.{split}.corpus", source)
    for name, entry in cfg["models"].items():
        check_model_config(entry, f"models.{name}.config", source)
    if check_paths:
        check_sources(cfg, source)
    for name in EVAL_SECTIONS:
        eval_config(cfg, name, source)
    if check_paths:
        check_longbench_files(cfg, source)
    sections = method_sections(cfg)
    for base in sections:
        if _has(cfg, base + ".train"):
            _coerce_section(cfg, base + ".train", TrainConfig)
        if _has(cfg, base + ".refine"):
            _coerce_section(cfg, base + ".refine", RefineConfig)
    scratch = [name for name, entry in cfg["models"].items() if not entry.get("pretrained")]
    if scratch and not cfg["data"].get("pretrain"):
        raise ConfigError(f"{source}: data.pretrain: required to pretrain the models {scratch} from scratch")
    for base in sections:
        if _has(cfg, base + ".train"):
            train_config(cfg, base + ".train", source)
    try:  # global batch sizes over the job's processes (checked again at run start under torchrun)
        check_world_size(cfg, training_processes(cfg))
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from err
    # (section, the shortest sequence it meets, where that length comes from)
    refine_sections = [
        ("midtrain.refine.refine", cfg["data"]["midtrain"]["seq_len"], "data.midtrain.seq_len"),
        ("posttrain.nested_refine.refine", cfg["eval"]["qa"]["train_length"], "eval.qa.train_length"),
        ("eval.ttt.refine", min(cfg["eval"]["niah"]["lengths"] + cfg["eval"]["qa"]["lengths"]),
         "the shortest eval.niah/qa length"),
    ]  # fmt: skip
    for key, length, origin in refine_sections:
        if not _has(cfg, key):
            continue
        rc = refine_config(cfg, key, source)
        try:
            rc.validate_for_length(length)
        except ValueError as err:
            raise ConfigError(f"{source}: {key} (with {origin}={length}): {err}") from err


def check_sources(cfg: dict, source: str = "<config>") -> None:
    """Every path-valued key names something that exists (or a hub name; see
    `refine.config.looks_like_hub_name`)."""
    for split, spec in cfg["data"].items():
        if spec is not None:
            check_source(spec["source"], f"data.{split}.source", source, ("generated",))
    tok = cfg["tokenizer"]
    if tok["kind"] == "pretrained":
        if not tok.get("path"):
            raise ConfigError(f"{source}: tokenizer.path: required with tokenizer.kind: pretrained")
        check_source(tok["path"], "tokenizer.path", source, kind="tokenizer directory")
    for name, entry in cfg["models"].items():
        check_source(entry.get("pretrained"), f"models.{name}.pretrained", source, kind="checkpoint directory")
    evals = cfg.get("eval") or {}
    qa = fill_dataclass_defaults(EVAL_SECTIONS["qa"], evals.get("qa"))
    check_source(qa["source"], "eval.qa.source", source, QA_KEYWORD_SOURCES, hub=False, kind=".parquet/.jsonl file")
    check_source(qa["train_source"], "eval.qa.train_source", source, hub=False, kind=".parquet/.jsonl file")
    niah = fill_dataclass_defaults(EVAL_SECTIONS["niah"], evals.get("niah"))
    check_source(niah["essay_dir"], "eval.niah.essay_dir", source, hub=False, kind="directory")
    lb = fill_dataclass_defaults(EVAL_SECTIONS["longbench"], evals.get("longbench"))
    check_source(lb["source"], "eval.longbench.source", source, ("synthetic",), kind="directory")


def check_longbench_files(cfg: dict, source: str = "<config>") -> None:
    """Every task of a local LongBench directory has one non-empty file (after the task names are checked)."""
    lb = fill_dataclass_defaults(EVAL_SECTIONS["longbench"], (cfg.get("eval") or {}).get("longbench"))
    if lb["source"] == "synthetic" or not Path(lb["source"]).is_dir():
        return
    for task in lb["tasks"]:
        try:
            path = find_task_file(lb["source"], task)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"{source}: eval.longbench.source: {err}") from None
        if path.stat().st_size == 0:
            raise ConfigError(f"{source}: eval.longbench.source: {path}: empty file (no records for {task})")
