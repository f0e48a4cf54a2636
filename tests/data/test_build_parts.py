"""The workflow builds the data one part per job (`refine data --only`, `refine eval-data --only`,
so a config edit reruns only the part it touches); the parts equal one build of everything."""

import filecmp

import numpy as np
import yaml

from refine.config import REPO_ROOT, deep_merge
from refine.data.build import build_data
from refine.eval.data import EVAL_DATA_PARTS, build_eval_data
from refine.study import validate_config


def test_parts_equal_the_whole(tmp_path):
    base = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    smoke = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text())
    small = {"data": {"pretrain": {"num_docs": 16}, "midtrain": {"num_docs": 4}, "heldout": {"num_docs": 4}}}
    cfg = validate_config(deep_merge(deep_merge(base, smoke), small), "test")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    build_data(cfg, whole)
    for part in ("tokenizer", "pretrain", "midtrain", "heldout"):
        build_data(cfg, parts, only=part)
    assert filecmp.cmp(whole / "tokenizer" / "tokenizer.json", parts / "tokenizer" / "tokenizer.json", shallow=False)
    for split in ("pretrain", "midtrain", "heldout"):
        np.testing.assert_array_equal(np.load(whole / f"{split}.npy"), np.load(parts / f"{split}.npy"))
    build_eval_data(cfg, whole / "tokenizer", whole / "eval")
    for part in EVAL_DATA_PARTS:
        build_eval_data(cfg, whole / "tokenizer", parts / "eval", only=part)
    tasks = cfg["eval"]["longbench"]["tasks"]
    names = ["niah.jsonl", "qa_test.jsonl", "qa_train.jsonl"] + [f"longbench/{t}.jsonl" for t in tasks]
    for name in names:
        assert filecmp.cmp(whole / "eval" / name, parts / "eval" / name, shallow=False), name
