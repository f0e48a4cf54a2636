"""Config loading: schema + dataclasses reject bad input with messages naming the key."""

from pathlib import Path

import pytest
import yaml

from refine.config import REPO_ROOT, ConfigError
from refine.study import load_config, validate_config

DEFAULT = REPO_ROOT / "config" / "config.yaml"


def _default() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "study_long.yaml"])
def test_shipped_configs_validate(name):
    cfg = _default()
    if name != "config.yaml":
        from refine.config import deep_merge

        cfg = deep_merge(cfg, yaml.safe_load((REPO_ROOT / "config" / name).read_text()))
    out = validate_config(cfg, name)
    assert out["tokenizer"]["kind"] in ("word", "byte", "pretrained")
    assert out["eval"]["ntp"]["batch_size"] >= 1  # default filled in


def test_unknown_top_level_key_is_named():
    cfg = _default()
    cfg["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match="learning_rate"):
        validate_config(cfg, "x.yaml")


def test_wrong_type_names_key_path():
    cfg = _default()
    cfg["data"]["pretrain"]["seq_len"] = "long"
    with pytest.raises(ConfigError, match=r"x.yaml: data.pretrain.seq_len"):
        validate_config(cfg, "x.yaml")


def test_unknown_train_field_names_section_and_field():
    cfg = _default()
    cfg["pretrain"]["train"]["learnin_rate"] = 1e-3
    with pytest.raises(ConfigError, match=r"pretrain.train.*learnin_rate"):
        validate_config(cfg, "x.yaml")


def test_bad_train_value_names_key():
    cfg = _default()
    cfg["midtrain"]["sft"]["train"]["lr"] = -1.0
    with pytest.raises(ConfigError, match=r"midtrain.sft.train.*lr"):
        validate_config(cfg, "x.yaml")


def test_impossible_refine_combination_is_rejected():
    cfg = _default()
    cfg["midtrain"]["refine"] = {
        "train": {"max_steps": 2},
        "refine": {"rollout_len": 10_000},
    }
    with pytest.raises(ConfigError, match="rollout_len"):
        validate_config(cfg, "x.yaml")


def test_negative_lambda_is_rejected():
    cfg = _default()
    cfg["midtrain"]["refine"] = {"train": {"max_steps": 2}, "refine": {"lambda_pg": -0.1}}
    with pytest.raises(ConfigError, match="lambda_pg"):
        validate_config(cfg, "x.yaml")


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_model_arch_is_named():
    cfg = _default()
    cfg["models"]["deltanet"]["arch"] = "mamba"
    with pytest.raises(ConfigError, match=r"models.deltanet.arch"):
        validate_config(cfg, "x.yaml")


# --- issue 13: bad input stops at DAG build -------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "change", "message"),
    [
        ("deltanet", {"hidden_sise": 64}, r"deltanet\.config: unknown field\(s\) \['hidden_sise'\].*'hidden_size'"),
        ("lact", {"hiden_size": 64}, r"models\.lact\.config: unknown field\(s\) \['hiden_size'\]"),
        ("deltanet", {"hidden_size": -64}, r"models\.deltanet\.config\.hidden_size: expected a positive value"),
        ("lact", {"num_hidden_layers": 0}, r"models\.lact\.config\.num_hidden_layers: expected a positive value"),
        ("deltanet", {"hidden_size": "big"}, r"models\.deltanet\.config\.hidden_size: expected an integer"),
        ("deltanet", {"tie_word_embeddings": 1}, r"tie_word_embeddings: expected true or false"),
        ("lact", {"norm_eps": 1}, None),  # an int where a float is expected is fine
    ],
)
def test_model_config_fields_are_checked_against_the_config_class(model, change, message):
    cfg = _default()
    cfg["models"][model]["config"] = {**cfg["models"][model]["config"], **change}
    if message is None:
        validate_config(cfg, "x.yaml")
        return
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, "x.yaml")


def test_model_config_fields_match_the_real_config_classes():
    """The fields read from the sources are those the classes accept (no import at DAG build)."""
    import inspect

    import fla.models

    from refine.config import model_config_fields
    from refine.models.lact import LaCTConfig

    for arch, cls in [("delta_net", fla.models.DeltaNetConfig), ("gated_deltanet", fla.models.GatedDeltaNetConfig),
                      ("lact", LaCTConfig)]:  # fmt: skip
        own = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs", "vocab_size"}
        assert own <= set(model_config_fields(arch)), arch
        for name, default in model_config_fields(arch).items():
            if name in own:
                assert inspect.signature(cls.__init__).parameters[name].default == default, (arch, name)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.midtrain.source", "data/no_such_corpus", r"data\.midtrain\.source: 'data/no_such_corpus' not found"),
        ("data.midtrain.source", "corpus.jsonl", r"data\.midtrain\.source: 'corpus.jsonl' not found"),
        ("eval.qa.source", "my_ruler_qa.parquet", r"eval\.qa\.source: 'my_ruler_qa.parquet' not found"),
        ("eval.qa.source", "org/some_qa", r"eval\.qa\.source: 'org/some_qa' not found"),  # QA reads no hub names
        ("eval.longbench.source", "LongBench/data", r"eval\.longbench\.source: 'LongBench/data' not found"),
        ("eval.longbench.tasks", ["hotpotqa", "hotpot_qa"], r"longbench\.tasks: unknown task\(s\) \['hotpot_qa'\]"),
        ("eval.longbench.tasks", ["lsht"], r"unknown task\(s\) \['lsht'\]; the synthetic suite generates"),
    ],
)
def test_sources_and_tasks_are_checked_at_load(key, value, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("data", "LongBench"):  # local folders: a missing path below them is not a hub name
        (tmp_path / folder).mkdir()
    cfg = _default()
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    if key == "eval.qa.source":
        cfg["eval"]["qa"]["train_source"] = None
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, "x.yaml")


def test_hub_names_and_existing_paths_are_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _default()
    cfg["data"]["midtrain"]["source"] = "DKYoon/SlimPajama-6B"  # owner/name, no local folder DKYoon
    (tmp_path / "lb").mkdir()
    for task in ("trec", "lcc"):
        (tmp_path / "lb" / f"{task}.jsonl").write_text("{}\n")
    cfg["eval"]["longbench"] = {"source": "lb", "tasks": ["trec", "lcc"]}
    validate_config(cfg, "x.yaml")
    cfg["eval"]["longbench"]["tasks"] = ["trec", "qasper"]  # a task without a file: named at load
    with pytest.raises(ConfigError, match=r"no file for LongBench task 'qasper'"):
        validate_config(cfg, "x.yaml")
    (tmp_path / "lb" / "qasper.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"qasper\.jsonl: empty file"):
        validate_config(cfg, "x.yaml")


def test_real_qa_source_needs_a_training_source(tmp_path):
    (tmp_path / "qa.jsonl").write_text("{}\n")
    cfg = _default()
    cfg["eval"]["qa"]["source"] = str(tmp_path / "qa.jsonl")
    with pytest.raises(ConfigError, match=r"eval\.qa\.train_source: required with eval\.qa\.source"):
        validate_config(cfg, "x.yaml")
    cfg["eval"]["qa"]["train_source"] = str(tmp_path / "qa.jsonl")
    validate_config(cfg, "x.yaml")


def test_pretrained_tokenizer_path_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tokenizers").mkdir()
    cfg = _default()
    cfg["tokenizer"] = {"kind": "pretrained", "path": "tokenizers/llama2"}
    with pytest.raises(ConfigError, match=r"tokenizer\.path: 'tokenizers/llama2' not found"):
        validate_config(cfg, "x.yaml")
    cfg["tokenizer"] = {"kind": "pretrained"}
    with pytest.raises(ConfigError, match=r"tokenizer\.path: required"):
        validate_config(cfg, "x.yaml")


def test_cuda_without_cuda_is_named(monkeypatch):
    import torch

    from refine.config import check_device

    cfg = validate_config(_default(), "x.yaml")
    cfg["device"] = "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device: cuda, but no CUDA device"):
        check_device(cfg, "x.yaml")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("results_dir", "results/x$(touch PWNED)"),
        ("results_dir", "results/`id`"),
        ("results_dir", "results/a;b"),
        ("results_dir", "results/{model}"),
        ("study", "../../../../escape"),
        ("study", "a/b"),
        ("study", "x$(id)"),
    ],
)
def test_path_and_name_values_are_constrained(key, value):
    cfg = _default()
    cfg[key] = value
    with pytest.raises(ConfigError, match=rf"x.yaml: {key}: .* does not match"):
        validate_config(cfg, "x.yaml")


def test_command_line_strings_are_coerced():
    """What Snakemake's --config hands over (YAML BaseLoader: every scalar a string)."""
    cfg = _default()
    cfg["seeds"] = ["0", "1"]
    cfg["eval"]["niah"]["lengths"] = ["64", "128"]
    cfg["eval"]["ttt"]["lr"] = "1e-4"
    cfg["midtrain"]["sft"]["train"] = {**cfg["midtrain"]["sft"]["train"], "lr": "1e-4", "bf16": "false",
                                       "betas": ["0.9", "0.95"], "max_steps": "12"}  # fmt: skip
    cfg["midtrain"]["refine"]["refine"] = {**cfg["midtrain"]["refine"]["refine"], "lambda_pg": "0.3"}
    cfg["data"]["pretrain"] = {"num_docs": "100", "seq_len": "32"}
    cfg["models"]["deltanet"]["config"] = {"hidden_size": "64", "tie_word_embeddings": "true"}
    out = validate_config(cfg, "x.yaml")
    assert out["models"]["deltanet"]["config"] == {"hidden_size": 64, "tie_word_embeddings": True}
    assert out["seeds"] == [0, 1] and out["eval"]["niah"]["lengths"] == [64, 128]
    assert out["eval"]["ttt"]["lr"] == 1e-4
    train = out["midtrain"]["sft"]["train"]
    assert (train["lr"], train["bf16"], train["betas"], train["max_steps"]) == (1e-4, False, [0.9, 0.95], 12)
    assert out["midtrain"]["refine"]["refine"]["lambda_pg"] == 0.3
    assert out["data"]["pretrain"] == {"num_docs": 100, "seq_len": 32, "source": "generated", "seed": 0}
    cfg["seeds"] = ["zero"]
    with pytest.raises(ConfigError, match=r"seeds\.0: 'zero' is not of type 'integer'"):
        validate_config(cfg, "x.yaml")


# --- one source of truth per setting -------------------------------------------------------------


def test_partial_ttt_refine_block_keeps_the_ttt_defaults():
    """A partial eval.ttt.refine block is merged field by field over the TTT-REFINE defaults (exact
    reward, lambda_pg 0.4): it used to replace them, so TTT-REFINE ran with the cosine reward and 0.2."""
    from refine.rl.config import RefineConfig

    cfg = _default()
    cfg.setdefault("eval", {}).setdefault("ttt", {})["refine"] = {"num_positions": 2, "margin": 8}
    out = validate_config(cfg, "x.yaml")
    block = out["eval"]["ttt"]["refine"]
    assert block["reward"] == "exact" and block["lambda_pg"] == 0.4
    assert block["num_positions"] == 2 and block["margin"] == 8
    built = RefineConfig(**block)
    assert (built.reward, built.lambda_pg, built.num_positions, built.margin) == ("exact", 0.4, 2, 8)
    assert built.rollout_len == RefineConfig.rollout_len  # untouched fields: RefineConfig's defaults


def test_partial_ttt_refine_block_through_eval_config():
    from refine.eval.config import eval_config

    cfg = _default()
    cfg.setdefault("eval", {}).setdefault("ttt", {})["refine"] = {"num_positions": 2, "reward": "hybrid"}
    ttt = eval_config(validate_config(cfg, "x.yaml"), "ttt")
    assert (ttt.refine.reward, ttt.refine.lambda_pg, ttt.refine.num_positions) == ("hybrid", 0.4, 2)
    assert eval_config({}, "ttt").refine.reward == "exact"  # absent block: the TTT defaults


def _schema_defaults(schema: dict, node: dict, path: str, out: dict) -> dict:
    """{dotted key: default} of every `default:` in the schema below `node`."""
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    for key, sub in (node.get("properties") or {}).items():
        dotted = f"{path}.{key}" if path else key
        if "default" in sub:
            out[dotted] = sub["default"]
        _schema_defaults(schema, sub, dotted, out)
    return out


def test_no_default_is_defined_twice():
    """Defaults of the dataclass-backed sections live in the dataclasses only: the schema holds no
    `default:` for a key that is a dataclass field (nor inside a dataclass section), and the resolved
    config of a study that sets none of them holds exactly the dataclasses' defaults."""
    from dataclasses import fields

    from refine.config import dataclass_defaults, load_schema
    from refine.eval.config import EVAL_SECTIONS

    schema = load_schema()
    defaults = _schema_defaults(schema, schema, "", {})
    dataclass_keys = {f"eval.{name}.{f.name}" for name, cls in EVAL_SECTIONS.items() for f in fields(cls)}
    twice = sorted(k for k in defaults if k in dataclass_keys or any(k.startswith(d + ".") for d in dataclass_keys))
    assert twice == []
    for section in ("corpus", "pretrain.train", "midtrain.refine.refine", "bench"):  # the other dataclass sections
        assert not [k for k in defaults if k.startswith(section + ".")]
    cfg = _default()
    cfg.pop("eval", None)
    out = validate_config(cfg, "x.yaml")
    for name, cls in EVAL_SECTIONS.items():
        assert out["eval"][name] == dataclass_defaults(cls), name


def test_eval_sections_are_checked_at_load_naming_the_key():
    cfg = _default()
    cfg.setdefault("eval", {}).setdefault("niah", {})["variants"] = ["niah_single_1", "niah_single_9"]
    with pytest.raises(ConfigError, match=r"^x\.yaml: eval\.niah\.variants: expected one of .*'niah_single_9'$"):
        validate_config(cfg, "x.yaml")
    cfg = _default()
    cfg.setdefault("eval", {}).setdefault("ttt", {})["reset"] = "never"
    with pytest.raises(ConfigError, match=r"^x\.yaml: eval\.ttt\.reset: expected one of \['example', 'cumulative'\]"):
        validate_config(cfg, "x.yaml")
    cfg = _default()
    cfg.setdefault("eval", {}).setdefault("ttt", {})["refine"] = {"rewrd": "exact"}
    with pytest.raises(ConfigError, match=r"eval\.ttt\.refine: unknown key\(s\) \['rewrd'\]"):
        validate_config(cfg, "x.yaml")


def _string_lists(tree) -> list[tuple[int, tuple[str, ...]]]:
    import ast

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List) and len(node.elts) > 1:
            if all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                out.append((node.lineno, tuple(e.value for e in node.elts)))
    return out


def test_name_lists_are_defined_once():
    """Stages, methods, suites, architectures and TTT modes are spelled in refine/names.py only: no
    other module of refine/ or tools/, and no workflow rule, writes one of those lists out again."""
    import ast
    import re

    from refine import names
    from refine.config import MODEL_CONFIG_CLASSES, load_schema

    lists = {names.STAGES, names.MID_METHODS, names.POST_METHODS, names.SUITES, names.ARCHITECTURES,
             names.TTT_MODES, names.TTT_RESETS}  # fmt: skip
    spelled = []
    for path in sorted([*(REPO_ROOT / "refine").rglob("*.py"), *(REPO_ROOT / "tools").glob("*.py")]):
        if path.name == "names.py" and path.parent.name == "refine":
            continue
        for line, values in _string_lists(ast.parse(path.read_text(encoding="utf-8"))):
            if values in lists:
                spelled.append(f"{path.relative_to(REPO_ROOT)}:{line}: {values}")
    for path in sorted((REPO_ROOT / "workflow").rglob("*.smk")):
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            for values in lists:
                if re.search(r"[\[(]\s*" + r",\s*".join(f"[\"']{re.escape(v)}[\"']" for v in values), line):
                    spelled.append(f"{path.relative_to(REPO_ROOT)}:{line_no}: {values}")
    assert spelled == []
    assert tuple(MODEL_CONFIG_CLASSES) == names.ARCHITECTURES
    assert load_schema()["definitions"]["model_entry"]["properties"]["arch"]["enum"] == list(names.ARCHITECTURES)
