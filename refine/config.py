"""Configuration: YAML → JSON schema → per-concern dataclasses → code.

One study is described by one YAML file (`config/config.yaml` is the embedded default,
commented key by key). Snakemake validates it against `workflow/schemas/config.schema.yaml`
when it builds the DAG, and every `refine` command validates it again with the same schema
and builds the dataclasses, whose `__post_init__` rejects impossible combinations. Errors
name the file and the key path (`midtrain.refine.rollout_len`) and what was expected.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the file and key."""


def load_schema() -> dict:
    if not SCHEMA_PATH.exists():
        raise ConfigError(f"{SCHEMA_PATH}: the config schema is missing (install refine from its repository)")
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill_defaults(schema: dict, value: Any, root: dict) -> Any:
    """Fill `default:` values of the schema into `value` (objects only, recursively)."""
    if "$ref" in schema:  # local references only: "#/definitions/name"
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    for option in schema.get("oneOf", []):  # the object branch of "object or null"
        if "$ref" in option and isinstance(value, dict):
            return _fill_defaults(option, value, root)
    if schema.get("type") != "object" or not isinstance(value, dict):
        return value
    props = schema.get("properties", {})
    for key, sub in props.items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            value[key] = _fill_defaults(sub, value[key], root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in value:
            if key not in props:
                value[key] = _fill_defaults(extra, value[key], root)
    return value


def validate_config(cfg: dict, source: str = "<config>") -> dict:
    """Validate `cfg` against the schema (filling defaults) and build every dataclass once."""
    schema = load_schema()
    cfg = _fill_defaults(schema, copy.deepcopy(cfg), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            if err.context:  # "object or null" and similar: report the deepest branch error
                err = max(err.context, key=lambda e: len(e.absolute_path))
            key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"{source}: {key}: {err.message}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    check_combinations(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read, merge `overrides` (nested dict) into, and validate a YAML config file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(cfg).__name__}")
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate_config(cfg, str(path))


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_hash(section: Any) -> str:
    """A short stable hash of a config section (used as a Snakemake rerun trigger)."""
    return hashlib.sha1(json.dumps(section, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_dataclass(cls, values: dict, key: str, source: str = "<config>"):
    """cls(**values), turning unknown fields and __post_init__ errors into ConfigErrors."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: {key}: unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {key}: {err}") from err


def train_config(cfg: dict, key: str, source: str = "<config>", seed: int | None = None):
    """The TrainConfig of section `key` (dotted path, e.g. 'midtrain.sft.train')."""
    from refine.train.config import TrainConfig

    values = dict(_section(cfg, key))
    if seed is not None:
        values["seed"] = seed
    return build_dataclass(TrainConfig, values, key, source)


def refine_config(cfg: dict, key: str, source: str = "<config>"):
    from refine.rl.config import RefineConfig

    return build_dataclass(RefineConfig, dict(_section(cfg, key)), key, source)


def _section(cfg: dict, key: str) -> dict:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"missing config section {key!r} (at {part!r})")
        node = node[part]
    return node


def check_combinations(cfg: dict, source: str = "<config>") -> None:
    """Build every dataclass the study uses, so impossible combinations fail at load time."""
    from refine.data.corpus import CorpusConfig

    build_dataclass(CorpusConfig, dict(cfg.get("corpus", {})), "corpus", source)
    scratch = [name for name, entry in cfg["models"].items() if not entry.get("pretrained")]
    if scratch and not cfg["data"].get("pretrain"):
        raise ConfigError(f"{source}: data.pretrain: required to pretrain the models {scratch} from scratch")
    stages = ["pretrain"] + [f"{s}.{m}" for s in ("midtrain", "posttrain") for m in cfg.get(s, {})]
    for stage in stages:
        if _has(cfg, stage + ".train"):
            train_config(cfg, stage + ".train", source)
    # (section, the shortest sequence it meets, where that length comes from)
    refine_sections = [
        ("midtrain.refine.refine", cfg["data"]["midtrain"]["seq_len"], "data.midtrain.seq_len")
    ]
    if _has(cfg, "posttrain.nested_refine.refine"):
        refine_sections.append(
            ("posttrain.nested_refine.refine", cfg["eval"]["qa"]["train_length"], "eval.qa.train_length")
        )
    if _has(cfg, "eval.ttt.refine"):
        shortest = min(cfg["eval"]["niah"]["lengths"] + cfg["eval"]["qa"]["lengths"])
        refine_sections.append(("eval.ttt.refine", shortest, "the shortest eval.niah/qa length"))
    for key, length, origin in refine_sections:
        if not _has(cfg, key):
            continue
        rc = refine_config(cfg, key, source)
        try:
            rc.validate_for_length(length)
        except ValueError as err:
            raise ConfigError(f"{source}: {key} (with {origin}={length}): {err}") from err


def _has(cfg: dict, key: str) -> bool:
    try:
        _section(cfg, key)
    except ConfigError:
        return False
    return True
