"""LongBench v1 task table, readers, truncation and the synthetic suite."""

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from refine.data.synthetic_longbench import generate_synthetic_longbench, write_synthetic_longbench
from refine.eval.longbench import (
    PAPER_TASKS,
    TASKS,
    TREC_CLASSES,
    LongBenchFormatError,
    encode_prompt,
    find_task_file,
    load_longbench,
    prompt_token_budget,
    read_prompt_parquet,
    read_raw_jsonl,
    truncate_middle,
)
from refine.eval.longbench_metrics import score_dataset

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "longbench_16k"
REAL_TASKS = ("hotpotqa", "qasper", "samsum", "multi_news", "trec", "lcc")
WORDS = [a + b for a in "bcdfghklmnpr" for b in ("al", "em", "ot", "us", "ix", "ar")]  # 72 words


def test_task_table_is_the_official_config():
    # sha256 of json.dumps(d, sort_keys=True) of THUDM/LongBench LongBench/config/dataset2prompt.json
    # and dataset2maxlen.json (computed from those files).
    prompts = {name: task.prompt_template for name, task in TASKS.items()}
    maxlen = {name: task.max_gen for name, task in TASKS.items()}
    digest = hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest()
    assert digest == "bb89f011861ff65f8534f366632b99cc9d5681ae983c50f2537230faae16613f"
    digest = hashlib.sha256(json.dumps(maxlen, sort_keys=True).encode()).hexdigest()
    assert digest == "39a79d9491ead3dc8bcea6dbd8b963b29248eb4c344dde1e176b0a58b4e758a9"
    assert "asconcisely" in TASKS["narrativeqa"].prompt_template
    lcc_prompt = TASKS["lcc"].format_prompt("x = 1\n", "")
    assert lcc_prompt == "Please complete the code given below. \nx = 1\nNext line of code:\n"
    assert [TASKS[t].max_gen for t in ("hotpotqa", "trec", "samsum", "multi_news")] == [32, 64, 128, 512]


def test_paper_tasks_and_metrics():
    assert len(PAPER_TASKS) == 12 and set(PAPER_TASKS) <= set(TASKS)
    assert all(TASKS[t].language == "en" for t in PAPER_TASKS)
    assert TASKS["qmsum"].metric_name == "rouge_score"
    assert TASKS["repobench-p"].metric_name == "code_sim_score"
    assert len(TREC_CLASSES) == len(set(TREC_CLASSES)) == 50


def _raw(task="trec", **overrides):
    record = {"input": "Q?", "context": "ctx", "answers": ["City"], "length": 7, "dataset": task,
              "language": "en", "all_classes": ["City", "Country"], "_id": "abc"}  # fmt: skip
    return {**record, **overrides}


def _write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_read_raw_jsonl_applies_the_official_template(tmp_path):
    path = _write_jsonl(tmp_path / "trec.jsonl", [_raw(), _raw(_id="def", dataset="trec_e")])
    records = read_raw_jsonl(path)
    assert [r.id for r in records] == ["abc", "def"]
    first = records[0]
    expected = "Please determine the type of the question below. Here are some examples of questions."
    expected += "\n\nctx\nQ?"
    assert first.prompt == expected
    assert first.answers == ("City",) and first.all_classes == ("City", "Country")
    assert (first.length, first.task, first.source) == (7, "trec", "longbench")


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({k: v for k, v in _raw().items() if k != "context"}, "context"),
        ({k: v for k, v in _raw().items() if k != "_id"}, "_id"),
        (_raw(answers=[]), "answers"),
        (_raw(answers="City"), "answers"),
        (_raw(dataset="lsht"), "dataset"),
        (_raw(input=3), "input"),
    ],
)
def test_raw_errors_name_file_record_and_field(tmp_path, record, field):
    path = _write_jsonl(tmp_path / "trec.jsonl", [_raw(), record])
    with pytest.raises(LongBenchFormatError, match=rf"trec\.jsonl: record 1: field '{field}'"):
        read_raw_jsonl(path)


def test_raw_bad_json_names_the_record(tmp_path):
    path = tmp_path / "trec.jsonl"
    path.write_text(json.dumps(_raw()) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(LongBenchFormatError, match=r"record 1: field '<json>'"):
        read_raw_jsonl(path)


def _frame(name="trec", **overrides):
    """Three prompt-formatted records of task `name`; `overrides` set fields of record 1."""
    frame = pd.DataFrame({
        "prompt": ["prompt 0", "prompt 1", "prompt 2"], "answers": [["City"], ["Country", "State"], ["Food"]],
        "prompt_length": [10, 11, 12], "max_answer_length": [1] * 3, "total_length": [11] * 3,
        "max_gen_tokens": [TASKS[name].max_gen] * 3, "task": [name] * 3,
    })  # fmt: skip
    for column, value in overrides.items():
        frame.loc[1, column] = value
    return frame


def test_read_prompt_parquet(tmp_path):
    path = tmp_path / "trec_16384.parquet"
    _frame().to_parquet(path)
    records = read_prompt_parquet(path)
    assert [r.prompt for r in records] == ["prompt 0", "prompt 1", "prompt 2"]
    assert records[1].answers == ("Country", "State")
    assert records[1].length == 11 and records[1].id == "trec-1"
    assert records[0].all_classes == TREC_CLASSES
    _frame("hotpotqa").to_parquet(tmp_path / "hotpotqa.parquet")
    assert read_prompt_parquet(tmp_path / "hotpotqa.parquet")[0].all_classes is None


def test_parquet_lsht_derives_labels_from_gold_answers(tmp_path):
    _frame("lsht").to_parquet(tmp_path / "lsht.parquet")
    labels = read_prompt_parquet(tmp_path / "lsht.parquet")[0].all_classes
    assert labels == ("City", "Country", "Food", "State")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"max_gen_tokens": 32}, "max_gen_tokens"), ({"task": "lsht"}, "task"), ({"prompt": ""}, "prompt")],
)
def test_parquet_errors_name_file_record_and_field(tmp_path, overrides, field):
    _frame(**overrides).to_parquet(tmp_path / "trec.parquet")
    with pytest.raises(LongBenchFormatError, match=rf"trec\.parquet: record 1: field '{field}'"):
        read_prompt_parquet(tmp_path / "trec.parquet")
    _frame().drop(columns="answers").to_parquet(tmp_path / "trec.parquet")
    with pytest.raises(LongBenchFormatError, match=r"record 0: field 'answers': missing column"):
        read_prompt_parquet(tmp_path / "trec.parquet")


def test_find_task_file(tmp_path):
    _frame().to_parquet(tmp_path / "trec_16384.parquet")
    assert find_task_file(tmp_path, "trec").name == "trec_16384.parquet"
    with pytest.raises(FileNotFoundError, match=r"hotpotqa\.jsonl"):
        find_task_file(tmp_path, "hotpotqa")
    with pytest.raises(KeyError, match="unknown LongBench task 'hotpot'"):
        find_task_file(tmp_path, "hotpot")
    _write_jsonl(tmp_path / "trec.jsonl", [_raw()])
    with pytest.raises(ValueError, match="several files"):
        find_task_file(tmp_path, "trec")


def test_truncate_middle_keeps_both_ends():
    ids = list(range(10))
    assert truncate_middle(ids, 10) == ids
    assert truncate_middle(ids, 4) == [0, 1, 8, 9]
    assert truncate_middle(ids, 5) == [0, 1, 8, 9]  # int(5 / 2) = 2 on each side, as pred.py
    with pytest.raises(ValueError, match="max_len must be >= 2"):
        truncate_middle(ids, 1)


def test_encode_prompt_with_a_local_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{word: i + 1 for i, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    prompt = " ".join(WORDS[:9])
    assert encode_prompt(prompt, tokenizer, 100) == list(range(1, 10))
    assert encode_prompt(prompt, tokenizer, 6) == [1, 2, 3, 7, 8, 9]
    assert prompt_token_budget(4096, "multi_news") == 4096 - 512
    with pytest.raises(ValueError, match="model_max_length=512"):
        prompt_token_budget(512, "multi_news")


def test_synthetic_suite_is_deterministic_and_closed_vocabulary():
    suite = generate_synthetic_longbench(WORDS, records_per_task=2, context_words=120, seed=3)
    assert suite == generate_synthetic_longbench(WORDS, records_per_task=2, context_words=120, seed=3)
    assert suite != generate_synthetic_longbench(WORDS, records_per_task=2, context_words=120, seed=4)
    assert list(suite) == list(PAPER_TASKS)
    allowed = set(WORDS) | {str(n) for n in range(1000)}
    allowed |= {token for label in TREC_CLASSES for token in re.findall(r"\w+", label)}
    for task, records in suite.items():
        for record in records:
            assert record["source"] == "synthetic" and record["dataset"] == task
            assert len(record["context"].split()) + len(record["input"].split()) >= 120
            text = " ".join([record["input"], record["context"], *record["answers"]])
            assert set(re.findall(r"\w+", text)) <= allowed, task
            assert all(not re.fullmatch(r"\d+", n) or int(n) < 1000 for n in re.findall(r"\w+", text))


def test_synthetic_suite_reads_and_scores_like_longbench(tmp_path):
    write_synthetic_longbench(tmp_path, WORDS, records_per_task=3, context_words=80, seed=0)
    suite = load_longbench(tmp_path)
    for task, records in suite.items():
        assert all(r.source == "synthetic" for r in records)
        gold = [r.answers[0] for r in records]
        assert score_dataset(task, gold, [r.answers for r in records], records[0].all_classes) == 100.0, task
        # the answer is in the context for the extractive QA tasks
        if task in ("narrativeqa", "hotpotqa", "triviaqa"):
            assert all(re.search(rf"\b{r.answers[0]} \.", r.prompt) for r in records)
    wrong = ["0"] * 3
    assert score_dataset("hotpotqa", wrong, [r.answers for r in suite["hotpotqa"]], None) < 100.0


def test_synthetic_rejects_small_pool():
    with pytest.raises(ValueError, match="distinct words"):
        generate_synthetic_longbench(WORDS[:10])


@pytest.mark.skipif(not DATA.is_dir(), reason="shared LongBench data absent")
def test_real_longbench_16k_files():
    suite = load_longbench(DATA, REAL_TASKS)
    assert set(suite) == set(REAL_TASKS)
    for task, records in suite.items():
        assert records and all(r.prompt and r.answers and all(r.answers) for r in records), task
        head, tail = TASKS[task].prompt_template.split("{context}")
        assert all(r.prompt.startswith(head) for r in records), task
        # the files' lcc prompts lack the template's final "\n" (stripped when they were made)
        assert all(r.prompt.endswith(tail.split("{input}")[-1].rstrip("\n")) for r in records), task
    for task in ("hotpotqa", "qasper"):
        records = suite[task]
        gold = [r.answers[0] for r in records]
        assert score_dataset(task, gold, [r.answers for r in records], None) == 100.0
    assert {a for r in suite["trec"] for a in r.answers} <= set(TREC_CLASSES)
