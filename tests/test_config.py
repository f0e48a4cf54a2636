"""Config loading: schema + dataclasses reject bad input with messages naming the key."""

from pathlib import Path

import pytest
import yaml

from refine.config import REPO_ROOT, ConfigError, load_config, validate_config

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
