"""Configuration, the generic part: YAML files → JSON schema → dataclass sections.

One study is described by one YAML file (`config/config.yaml` is the embedded default,
commented key by key). This module reads config files (with their `extends:` chain) and merges
them as Snakemake does, checks a config against `workflow/schemas/config.schema.yaml`
(`validate_schema`: types and patterns, and the schema's defaults of keys no dataclass holds),
builds a dataclass from a section (`build_dataclass`: unknown keys and `__post_init__` errors
become one-line ConfigErrors naming the key; nested dataclass fields merge field by field) and
fills a section from its dataclass's defaults (`fill_dataclass_defaults`). It imports nothing of
the package but `refine.names`: the per-concern dataclasses sit above it, and the whole-study check
that puts them together is `refine.study.validate_config` (what Snakemake and every `refine`
command call).

Also generic: command-line strings read as YAML where a number, boolean or null is wanted
(`coerce_strings`, `coerce_fields`; Snakemake's `--config seeds='[0]'` gives `['0']`), the fields a
`models.<m>.config` may set read from the model config class's source (`model_config_fields`, no
fla/transformers import), whether a missing source path looks like a hub name
(`looks_like_hub_name`), and the field checks the dataclasses' `__post_init__` share
(`check_integer`, `check_optional_integer`, `check_one_of`, `check_number`: a FieldError naming the field).
"""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
import json
import math
import re
import typing
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from refine.names import ARCHITECTURES

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the file and key."""


class FieldError(ValueError):
    """A bad value of one dataclass field, raised by `__post_init__`; `build_dataclass` turns it
    into a one-line ConfigError naming the full key (`<section>.<field>: <message>`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# Field checks for the dataclasses' `__post_init__` (each raises a FieldError naming the field).


def check_integer(key: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise FieldError(key, f"expected an integer >= {minimum}, got {value!r}")


def check_optional_integer(key: str, value, minimum: int) -> None:
    if value is not None:
        check_integer(key, value, minimum)


def check_one_of(key: str, value, known) -> None:
    if value not in known:
        raise FieldError(key, f"expected one of {list(known)}, got {value!r}")


def check_number(key: str, value, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise FieldError(key, f"expected a finite number, got {value!r}")
    if (value <= 0) if positive else (value < 0):
        raise FieldError(key, f"expected a number {'> 0' if positive else '>= 0'}, got {value!r}")


def load_schema() -> dict:
    if not SCHEMA_PATH.exists():
        raise ConfigError(f"{SCHEMA_PATH}: the config schema is missing (install refine from its repository)")
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    schema["definitions"]["model_entry"]["properties"]["arch"]["enum"] = list(ARCHITECTURES)  # named once
    return schema


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


def _scalar(text: str) -> Any:
    """A command-line string as the YAML scalar it spells (1e-4 and 1.0e-4 are both numbers)."""
    lowered = text.strip().lower()
    if lowered in ("null", "~", "none"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _schema_types(schema: dict) -> set[str]:
    types = schema.get("type", [])
    types = {types} if isinstance(types, str) else set(types)
    if "enum" in schema:
        types |= {"string" if isinstance(v, str) else "other" for v in schema["enum"]}
    return types


def coerce_strings(schema: dict, value: Any, root: dict) -> Any:
    """Strings where `schema` wants no string (numbers, booleans, null, lists) read as YAML.

    Snakemake's `--config key=value` parses values with YAML's BaseLoader, so list items and
    nested values arrive as strings (`seeds='[0]'` → `['0']`); YAML files give real types and
    pass through unchanged. Sections checked by a dataclass are coerced by `coerce_fields`.
    """
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    for option in schema.get("oneOf", []):
        if "$ref" in option and isinstance(value, dict):
            return coerce_strings(option, value, root)
    types = _schema_types(schema) | {t for o in schema.get("oneOf", []) for t in _schema_types(o)}
    if isinstance(value, str) and types and "string" not in types:
        value = _scalar(value)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [coerce_strings(schema["items"], item, root) for item in value]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key in value:
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = coerce_strings(sub, value[key], root)
    return value


def coerce_fields(cls, values: dict) -> dict:
    """`values` with command-line strings turned into numbers/booleans/None where the dataclass
    field `cls.<name>` takes no string (see `coerce_strings`)."""
    hints = typing.get_type_hints(cls)
    nested = {f.name: type(d) for f in fields(cls) if is_dataclass(d := _field_default(f))}
    out = dict(values)
    for name, value in values.items():
        if name in nested and isinstance(value, dict):
            out[name] = coerce_fields(nested[name], value)
            continue
        hint = hints.get(name)
        if hint is None or "str" in str(hint):
            continue
        if isinstance(value, str):
            out[name] = _scalar(value)
        elif isinstance(value, list):
            out[name] = [_scalar(v) if isinstance(v, str) else v for v in value]
    return out


def validate_schema(cfg: dict, source: str = "<config>") -> dict:
    """`cfg` checked against the JSON schema: command-line strings read as YAML where the schema wants
    no string, the schema's `default:` values filled in, every error named by file and key. The study
    check (`refine.study.validate_config`) adds the dataclasses' defaults and checks on top."""
    schema = load_schema()
    cfg = coerce_strings(schema, copy.deepcopy(cfg), schema)
    cfg = _fill_defaults(schema, cfg, schema)
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
    return cfg


def read_config_file(path: str | Path) -> dict:
    """The mapping of a YAML config file; a missing, binary or non-YAML file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte {err.start} is not UTF-8); expected a YAML config") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (contains NUL bytes); expected a YAML config")
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(cfg).__name__}")
    return cfg


def read_layered_config(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A config file with its `extends:` chain applied: the file it names (a path relative to the
    repository root, else to this file) is read the same way, and this file is merged over it.
    `config/rehearsal.yaml` extends `config/paper.yaml` this way, so it holds only what it changes."""
    path = Path(path)
    cfg = read_config_file(path)
    base = cfg.pop("extends", None)
    if base is None:
        return cfg
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected the path of a config file, got {base!r}")
    base_path = Path(base) if Path(base).is_absolute() else REPO_ROOT / base
    if not base_path.is_file():
        base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends: config file {base!r} not found")
    if base_path.resolve() in _seen + (path.resolve(),):
        raise ConfigError(f"{path}: extends: {base!r} extends itself (a cycle)")
    return deep_merge(read_layered_config(base_path, _seen + (path.resolve(),)), cfg)


def merge_config_files(paths: list[str | Path], overrides: dict | None = None) -> dict:
    """What Snakemake's config is for these `configfile:`/`--configfile` files (in order) and
    `--config` overrides, with every file's `extends:` chain applied (Snakemake itself ignores it)."""
    cfg: dict = {}
    for path in paths:
        cfg = deep_merge(cfg, read_layered_config(path))
    return deep_merge(cfg, overrides or {})


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


def _field_default(f) -> Any:
    if f.default is not MISSING:
        return copy.deepcopy(f.default)
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def dataclass_defaults(cls) -> dict[str, Any]:
    """{field: default} of a config dataclass, as they appear in a resolved config: a field holding
    a nested dataclass gives the fields where its default differs from that class's own defaults
    (e.g. `TTTConfig.refine`: {reward: exact, lambda_pg: 0.4}); fields without a default are left out."""
    out = {}
    for f in fields(cls):
        default = _field_default(f)
        if default is MISSING:
            continue
        if is_dataclass(default):
            own = dataclass_defaults(type(default))
            out[f.name] = {k: v for k, v in asdict(default).items() if k not in own or own[k] != v}
        else:
            out[f.name] = list(default) if isinstance(default, tuple) else default
    return out


def fill_dataclass_defaults(cls, values: dict | None) -> dict:
    """`values` with every missing field of `cls` set to its default (`dataclass_defaults`); the
    blocks of nested dataclass fields are merged field by field, never replaced."""
    values = dict(values or {})
    out = {}
    for name, default in dataclass_defaults(cls).items():
        given = values.pop(name, MISSING)
        if isinstance(default, dict) and isinstance(given, dict):
            out[name] = {**default, **given}
        else:
            out[name] = default if given is MISSING else given
    out.update(values)  # unknown keys stay for build_dataclass to name
    return out


def build_dataclass(cls, values: dict, key: str, source: str = "<config>"):
    """cls(**values), turning unknown fields and __post_init__ errors into one-line ConfigErrors
    naming `key` (a FieldError names `key.<field>`). A field holding a nested dataclass takes a
    mapping, merged field by field over that field's default."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {key}: expected a mapping of {cls.__name__} fields, got {values!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: {key}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = coerce_fields(cls, values)
    for f in fields(cls):
        default = _field_default(f)
        if is_dataclass(default) and f.name in values:
            given = values[f.name]
            if not isinstance(given, dict):
                raise ConfigError(f"{source}: {key}.{f.name}: expected a mapping of {type(default).__name__} "
                                  f"fields, got {given!r}")  # fmt: skip
            merged = {**asdict(default), **given}
            values[f.name] = build_dataclass(type(default), merged, f"{key}.{f.name}", source)
    try:
        return cls(**values)
    except FieldError as err:
        raise ConfigError(f"{source}: {key}.{err.field}: {err.message}") from err
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {key}: {err}") from err


def config_section(cfg: dict, key: str) -> dict:
    """The mapping at dotted `key` of `cfg`; a missing part is a ConfigError."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"missing config section {key!r} (at {part!r})")
        node = node[part]
    return node


# --- model configs ---------------------------------------------------------------------------

# arch -> (module, class) of the config class whose __init__ lists the fields `models.<m>.config` may set
MODEL_CONFIG_CLASSES = {
    "delta_net": ("fla.models.delta_net.configuration_delta_net", "DeltaNetConfig"),
    "gated_deltanet": ("fla.models.gated_deltanet.configuration_gated_deltanet", "GatedDeltaNetConfig"),
    "lact": ("refine.models.lact.configuration_lact", "LaCTConfig"),
}
_BASE_CONFIG = ("transformers.configuration_utils", "PreTrainedConfig")
_NO_DEFAULT = object()


def _init_defaults(module: str, cls_name: str) -> dict[str, Any]:
    """{argument: default} of `cls_name.__init__` in `module`, read from the source file (importing
    fla or transformers costs seconds at every DAG build); non-literal defaults map to None."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level spec executes nothing (a submodule's would)
    path = None if spec is None else Path(spec.origin).parent.joinpath(*rest).with_suffix(".py")
    if path is None or not path.is_file():
        raise ConfigError(f"cannot find the module {module} (is it installed?)")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args.args[1:] + item.args.kwonlyargs
                    defaults = [_NO_DEFAULT] * (len(item.args.args) - 1 - len(item.args.defaults))
                    defaults += list(item.args.defaults) + list(item.args.kw_defaults)
                    out = {}
                    for arg, default in zip(args, defaults, strict=True):
                        try:
                            out[arg.arg] = default if default is _NO_DEFAULT else ast.literal_eval(default)
                        except (ValueError, TypeError, SyntaxError):
                            out[arg.arg] = None
                    return out
            fields_ = {}  # a dataclass-like class: its annotated class attributes
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    if "ClassVar" in ast.unparse(item.annotation):
                        continue
                    try:
                        fields_[item.target.id] = _NO_DEFAULT if item.value is None else ast.literal_eval(item.value)
                    except (ValueError, TypeError, SyntaxError):
                        fields_[item.target.id] = None
            return fields_
    raise ConfigError(f"{module}: no class {cls_name}")


def model_config_fields(arch: str) -> dict[str, Any]:
    """The fields (with their defaults) a `models.<m>.config` of architecture `arch` may set."""
    fields_ = {k: v for k, v in _init_defaults(*_BASE_CONFIG).items() if v is not _NO_DEFAULT}
    fields_.update(_init_defaults(*MODEL_CONFIG_CLASSES[arch]))
    fields_.pop("vocab_size", None)  # set from the study's tokenizer
    return fields_


def _expected(default: Any) -> tuple[tuple[type, ...], str] | None:
    """(accepted types, description) of a field from its default value; None: anything."""
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "an integer"
    if isinstance(default, float):
        return (int, float), "a number"
    if isinstance(default, str):
        return (str,), "a string"
    return None


def check_model_config(entry: dict, key: str, source: str = "<config>") -> None:
    """Reject unknown fields, wrong types and non-positive sizes in a model entry's `config`
    (the values the tiny model is built with), naming the key."""
    overrides = entry.get("config") or {}
    if not overrides:
        return
    if entry.get("pretrained"):
        raise ConfigError(f"{source}: {key}: set for a pretrained model ({entry['pretrained']}), whose config "
                          "is the checkpoint's; remove it")  # fmt: skip
    known = model_config_fields(entry["arch"])
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        close = {u: [k for k in known if _similar(u, k)] for u in unknown}
        hint = "; ".join(f"{u!r}: did you mean {c[0]!r}?" for u, c in close.items() if c)
        raise ConfigError(f"{source}: {key}: unknown field(s) {unknown} of {MODEL_CONFIG_CLASSES[entry['arch']][1]}"
                          + (f" ({hint})" if hint else f"; known: {sorted(known)}"))  # fmt: skip
    for name, value in list(overrides.items()):
        default = known[name]
        if isinstance(value, str) and not isinstance(default, str):  # from the command line (`coerce_strings`)
            value = overrides[name] = _scalar(value)
        expected = _expected(default)
        if expected is None or value is None and default is None:
            continue
        types, what = expected
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            raise ConfigError(f"{source}: {key}.{name}: expected {what} (like the default {default!r}), got {value!r}")
        if not isinstance(value, bool) and isinstance(default, int | float) and not isinstance(default, bool):
            if default > 0 and value <= 0:
                raise ConfigError(f"{source}: {key}.{name}: expected a positive value, got {value!r}")


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.8


# --- sources ----------------------------------------------------------------------------------

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet", ".yaml", ".yml", ".csv", ".arrow")


def looks_like_hub_name(value: str) -> bool:
    """`owner/name` with no file suffix and no local folder `owner`: a Hugging Face hub name.
    Anything else that does not exist is a local path that is missing."""
    if not _HUB_NAME.match(value) or value.lower().endswith(_FILE_SUFFIXES):
        return False
    return not Path(value.split("/", 1)[0]).exists()


def check_source(value: str | None, key: str, source: str, keywords: tuple[str, ...] = (),
                  hub: bool = True, kind: str = "file or directory") -> None:  # fmt: skip
    if value is None or value in keywords:
        return
    if Path(value).expanduser().exists():
        return
    if hub and looks_like_hub_name(value):
        return
    also = f" or one of {list(keywords)}" if keywords else ""
    hub_hint = " or a hub name owner/name" if hub else ""
    raise ConfigError(f"{source}: {key}: {value!r} not found (expected an existing {kind}{hub_hint}{also}; "
                      f"relative paths are relative to {Path.cwd()})")  # fmt: skip


def check_device(cfg: dict, source: str = "<config>") -> None:
    """`device: cuda` needs a visible CUDA device (checked where jobs run on this machine)."""
    if cfg["device"] != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"{source}: device: cuda, but no CUDA device is visible here "
                          "(set device: cpu, or run the jobs on GPU nodes with a cluster profile)")  # fmt: skip


def lookup_key(cfg: dict, key: str) -> Any:
    """The value at dotted `key` of `cfg`, None where a part is missing (an absent optional section)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
