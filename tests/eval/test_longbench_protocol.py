"""LongBench prediction as the official pred.py does it, and the REFINE authors' 16K subset rule.

Tokenizers are local (WordLevel with a BOS post-processor, so "BOS counted inside the budget" is
visible); the authors' filtered files are checked where ../shared/data exists.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from refine.eval import run as run_module
from refine.eval.longbench import (
    AUTHORS_SUBSET_SIZES,
    fits_context,
    get_task,
    newline_token_id,
    official_truncate,
    read_prompt_parquet,
)
from refine.eval.suites import longbench_items, longbench_source_label, select_subset

WORDS = [a + b for a in "bcdfghklmnpr" for b in ("al", "em", "ot", "us", "ix", "ar")]  # 72 words
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "longbench_16k"


@pytest.fixture(scope="module")
def tokenizer():
    """One token per word, "<s>" prepended (a Llama-like BOS); decode joins words with spaces."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{word: i + 3 for i, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    backend.decoder = decoders.WordPiece(prefix="##")  # joins tokens with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_official_truncate_counts_bos_and_decodes_halves_separately(tokenizer):
    prompt = " ".join(WORDS[:9])  # 9 words + BOS = 10 ids
    assert official_truncate(prompt, tokenizer, 10) == prompt  # fits with its BOS: unchanged
    # 10 ids > 9: halves of int(9 / 2) = 4 ids, BOS the first of them; each half decoded on its own
    # (special tokens skipped) and the strings joined without a separator, as pred.py does
    cut = official_truncate(prompt, tokenizer, 9)
    assert cut == " ".join(WORDS[:3]) + " ".join(WORDS[5:9])
    assert cut == "bal bem bot" + "bar cal cem cot"
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        official_truncate(prompt, tokenizer, 1)


def _write_raw(directory: Path, task: str, n_words: list[int]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"{task}.jsonl").open("w") as handle:
        for i, n in enumerate(n_words):
            record = {"input": "", "context": " ".join(WORDS[j % len(WORDS)] for j in range(n)), "answers": ["bal"],
                      "length": n, "dataset": task, "language": "en", "all_classes": None, "_id": f"id{i}"}  # fmt: skip
            handle.write(json.dumps(record) + "\n")


def test_authors_subset_rule_counts_bos_and_the_official_budget(tmp_path, tokenizer):
    task = "hotpotqa"  # max_gen 32
    template_tokens = len(tokenizer(get_task(task).format_prompt("", ""))["input_ids"])  # BOS included
    length = 200
    limit = length - get_task(task).max_gen - template_tokens  # context words that exactly fit
    _write_raw(tmp_path, task, [limit - 1, limit, limit + 1])
    items = longbench_items(tmp_path, [task], length, None, "official", None, "fits")
    kept = select_subset(items, tokenizer)
    assert [item.id for item in kept] == [f"{task}/id0", f"{task}/id1"]
    prompt_tokens = len(tokenizer(kept[1].prompt)["input_ids"])
    assert prompt_tokens + 32 == length  # the boundary record: prompt (with BOS) + max_gen == 200
    assert select_subset(longbench_items(tmp_path, [task], length, None, "official", None, "all"), tokenizer) == (
        longbench_items(tmp_path, [task], length, None, "official", None, "all")
    )


def test_official_protocol_prompts_and_samsum_generation(tmp_path, tokenizer, monkeypatch):
    _write_raw(tmp_path, "samsum", [40])
    _write_raw(tmp_path, "trec", [40])
    official = longbench_items(tmp_path, ["samsum", "trec"], 1000, None, "official", 30, "all")
    budget = longbench_items(tmp_path, ["samsum", "trec"], 1000, None, "budget", None, "all")
    samsum, trec = official
    assert (samsum.stop_strings, samsum.stop_on_newline_token, samsum.min_new_tokens) == ([], True, 1)
    assert (trec.stop_strings, trec.stop_on_newline_token, trec.min_new_tokens) == ([], False, 0)
    assert samsum.prompt_token_limit == 30 and samsum.truncation == "official"
    assert (budget[0].stop_strings, budget[0].stop_on_newline_token, budget[0].min_new_tokens) == (["\n"], False, 0)
    assert budget[0].prompt_token_limit == 1000 - 128  # the default study's rule is unchanged
    prompts = run_module._truncate(official, tokenizer)
    assert prompts == [official_truncate(item.prompt, tokenizer, 30) for item in official]
    assert all(len(tokenizer(p)["input_ids"]) <= 30 for p in prompts)  # BOS inside the 30

    calls = []

    def fake_generate(model, tok, batch, budget, batch_size, **kwargs):
        calls.append((budget, kwargs))
        return ["x"] * len(batch)

    monkeypatch.setattr(run_module, "greedy_generate", fake_generate)
    monkeypatch.setattr(run_module, "newline_token_id", lambda tok: 77)
    decode = run_module._decoder(None, tokenizer, official, prompts, batch_size=4, scored=False)
    assert decode([0, 1]) == (["x", "x"], None)
    by_budget = dict(calls)
    assert by_budget[128] == {"stop_strings": None, "stop_token_ids": [77], "min_new_tokens": 1}  # samsum
    assert by_budget[64] == {"stop_strings": None, "stop_token_ids": None, "min_new_tokens": 0}  # trec


def test_newline_token_id_is_the_last_id_of_a_newline(tokenizer):
    from tokenizers import trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["Dialogue:\nA: hi\nB: hello\n\nSummary:"], trainer)
    byte_level = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert newline_token_id(byte_level) == byte_level.convert_tokens_to_ids("\u010a")  # byte-level "\\n"
    with pytest.raises(ValueError, match="encodes '\\\\n' to no token"):
        newline_token_id(tokenizer)  # whitespace-split words: no newline token


def test_source_label_names_the_subset_and_protocol():
    spec = {"source": "THUDM/LongBench", "subset": "fits", "protocol": "official", "model_max_length": 16384,
            "max_length": 16352}  # fmt: skip
    label = longbench_source_label(spec)
    assert label == "LongBench (THUDM/LongBench); authors' subset: prompt + max_gen <= 16384 tokens; " \
                    "pred.py truncation to 16352"  # fmt: skip
    assert longbench_source_label({**spec, "source": "synthetic"}) == "synthetic LongBench-format suite"
    assert longbench_source_label({**spec, "subset": "all", "protocol": "budget"}) == "LongBench (THUDM/LongBench)"


@pytest.mark.parametrize("task", sorted(p.name.split("_16384")[0] for p in DATA.glob("*_16384.parquet")) or ["none"])
def test_authors_files_are_what_the_rule_keeps(task):
    """Every record of the authors' filtered copies satisfies the rule, and their sizes are the table's."""
    if not DATA.exists():
        pytest.skip(f"{DATA} not present (real data only where ../shared/data exists)")
    path = DATA / f"{task}_16384.parquet"
    records = read_prompt_parquet(path)
    frame = pd.read_parquet(path)
    assert len(records) == AUTHORS_SUBSET_SIZES[task]
    assert all(fits_context(int(n), task, 16384) for n in frame["prompt_length"])
