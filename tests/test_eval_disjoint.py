"""No evaluation item occurs in a training split: the smoke config's data, built with the `qa` and
`longbench` corpus kinds (evaluation formats from the evaluation's generators), checked item by item
against the decoded training token rows and the post-training QA items; and the check catches the
leak when the corpus draws its items from the evaluation's own seeds (`task_seed` monkeypatched)."""

import re

import numpy as np
import pytest
import yaml

from refine.config import REPO_ROOT, deep_merge
from refine.data import corpus
from refine.data.build import build_data
from refine.data.jsonl import read_jsonl
from refine.data.tokenizer import load_tokenizer
from refine.eval.data import QA_TEST_SEED, build_eval_data
from refine.study import validate_config

QUESTION = re.compile(r"Question: What is the (\w+) of (\w+ \w+)\?")
SPLITS = ("pretrain", "midtrain", "heldout")


def smoke_config(tmp_path) -> dict:
    base = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    smoke = yaml.safe_load((REPO_ROOT / "config" / "smoke.yaml").read_text())
    lb = smoke["eval"]["longbench"]
    facts = deep_merge(base, smoke)["eval"]["qa"].get("facts", 3)
    tasks = {
        "results_dir": str(tmp_path / "results"),
        # every split long enough for a smoke QA item (192 tokens); the task kinds in every split
        "data": {split: {"num_docs": n, "seq_len": 192} for split, n in zip(SPLITS, (96, 16, 8), strict=True)},
        "corpus": {
            "kind_weights": {"recall": 0.3, "qa": 0.3, "longbench": 0.3, "qa_dense": 0.1},
            "segment_tokens": 32,
            "qa_passages": smoke["eval"]["qa"]["num_docs"],
            "qa_facts": facts,
            "longbench_tasks": lb["tasks"],
            "longbench_context_words": lb["context_words"],
        },  # fmt: skip
    }  # the corpus's QA/LongBench settings equal the evaluation's: only the seeds keep them apart
    return validate_config(deep_merge(deep_merge(base, smoke), tasks), "test")


def training_texts(data_dir) -> list[str]:
    """Every training document as the trainers see it: the token rows of each split, decoded."""
    tokenizer = load_tokenizer(data_dir / "tokenizer")
    texts = []
    for split in SPLITS:
        for row in np.load(data_dir / f"{split}.npy"):
            texts.append(tokenizer.decode(row.tolist(), skip_special_tokens=True))
    return texts


def leaks(cfg: dict, data_dir, eval_dir) -> list[str]:
    """Ids of evaluation items that occur in a training split: the whole prompt (context + question)
    in a training row; a QA question with its gold fact in one training row or post-training item;
    a LongBench-format context (its first 120 characters, never cut there) in a training row."""
    rows = training_texts(data_dir)
    post = [r["input"] for r in read_jsonl(eval_dir / "qa_train.jsonl")]
    found = []
    for rec in read_jsonl(eval_dir / "niah.jsonl"):
        if any(rec["input"] in row for row in rows):
            found.append(f"niah/{rec['variant']}/{rec['index']}")
    for rec in read_jsonl(eval_dir / "qa_test.jsonl"):
        attribute, entity = QUESTION.search(rec["input"]).groups()
        question = f"What is the {attribute} of {entity}?"
        fact = f"The {attribute} of {entity} is {rec['outputs'][0]}."
        if any(rec["input"] in text or (question in text and fact in text) for text in rows + post):
            found.append(f"qa/{rec['index']}")
    for task in cfg["eval"]["longbench"]["tasks"]:
        for index, rec in enumerate(read_jsonl(eval_dir / "longbench" / f"{task}.jsonl")):
            head = rec["context"][:120]
            if any(head in row for row in rows):
                found.append(f"longbench/{task}/{index}")
    return found


def build(cfg: dict, tmp_path):
    build_data(cfg, tmp_path / "data")
    build_eval_data(cfg, tmp_path / "data" / "tokenizer", tmp_path / "eval")
    return tmp_path / "data", tmp_path / "eval"


@pytest.fixture
def cfg(tmp_path):
    return smoke_config(tmp_path)


def test_no_evaluation_item_occurs_in_a_training_split(cfg, tmp_path):
    data_dir, eval_dir = build(cfg, tmp_path)
    kinds = [row[:200] for row in training_texts(data_dir)]
    assert any(text.startswith("Answer the question based on the given passages") for text in kinds)  # qa rows exist
    assert any(text.lstrip().startswith("Document 1:") for text in kinds)  # qa_dense rows exist
    assert leaks(cfg, data_dir, eval_dir) == []


def test_the_check_finds_items_drawn_from_the_evaluation_seeds(cfg, tmp_path, monkeypatch):
    # refine.eval.data's streams
    seeds = {"qa": QA_TEST_SEED, "qa_dense": QA_TEST_SEED, "longbench": cfg["eval"]["longbench"]["seed"]}
    monkeypatch.setattr(corpus, "task_seed", lambda kind, rng: seeds[kind])
    found = leaks(cfg, *build(cfg, tmp_path))
    assert any(item.startswith("qa/") for item in found), found
    assert any(item.startswith("longbench/") for item in found), found


def test_the_check_finds_dense_qa_rows_drawn_from_the_evaluation_seed(cfg, tmp_path, monkeypatch):
    cfg["corpus"]["kind_weights"] = {"recall": 0.5, "qa_dense": 0.5}  # the only QA rows: qa_dense ones
    monkeypatch.setattr(corpus, "task_seed", lambda kind, rng: QA_TEST_SEED)
    found = leaks(cfg, *build(cfg, tmp_path))
    assert any(item.startswith("qa/") for item in found), found
