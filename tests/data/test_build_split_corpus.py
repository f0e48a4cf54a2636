"""A split's own `corpus` (data.<split>.corpus, merged over `corpus`): its documents follow it, the other
splits and the tokenizer of a study without one are unchanged, and the tokenizer covers every split."""

import filecmp

import numpy as np
import pytest
import yaml

from refine.config import REPO_ROOT, ConfigError, deep_merge
from refine.data.build import build_data
from refine.data.tokenizer import load_tokenizer
from refine.study import validate_config

QA_HEAD = "Answer the question based on the given passages"


def config(tmp_path, pretrain_corpus=None) -> dict:
    base = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    smoke = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text())
    data = {"pretrain": {"num_docs": 24, "seq_len": 256}, "midtrain": {"num_docs": 4}, "heldout": {"num_docs": 4}}
    if pretrain_corpus is not None:
        data["pretrain"]["corpus"] = pretrain_corpus
    return validate_config(deep_merge(deep_merge(base, smoke), {"data": data}), "test")


def decoded(path, split):
    tokenizer = load_tokenizer(path / "tokenizer")
    return [tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in np.load(path / f"{split}.npy")]


def test_a_split_corpus_applies_to_its_split_only(tmp_path):
    plain, mixed = tmp_path / "plain", tmp_path / "mixed"
    build_data(config(tmp_path), plain)
    tasks = {"segment_tokens": 32, "kind_weights": {"recall": 0.4, "qa": 0.3, "longbench": 0.3}}
    build_data(config(tmp_path, tasks), mixed)
    assert sum(text.startswith(QA_HEAD) for text in decoded(mixed, "pretrain")) >= 3
    assert not any(QA_HEAD in text for text in decoded(plain, "pretrain"))
    for split in ("midtrain", "heldout"):  # same documents (the tokens may have other ids)
        assert decoded(plain, split) == decoded(mixed, split)
    tokenizer = load_tokenizer(mixed / "tokenizer")  # whole tokens only: no row hits the character fallback
    unk = {tokenizer.convert_tokens_to_ids(c) for c in "abcdefghijklmnopqrstuvwxyz"}
    assert not unk & set(np.load(mixed / "pretrain.npy").ravel().tolist())


def test_no_split_corpus_keeps_the_tokenizer(tmp_path):
    build_data(config(tmp_path), tmp_path / "a", only="tokenizer")
    empty = config(tmp_path)
    empty["data"]["pretrain"]["corpus"] = {}
    build_data(empty, tmp_path / "b", only="tokenizer")
    assert filecmp.cmp(tmp_path / "a" / "tokenizer" / "tokenizer.json", tmp_path / "b" / "tokenizer" / "tokenizer.json",
                       shallow=False)  # fmt: skip


def test_a_bad_split_corpus_fails_at_load_time_naming_the_split(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.pretrain\.corpus.*segment_tokens=512 exceeds doc_tokens=256"):
        config(tmp_path, {"segment_tokens": 512})
