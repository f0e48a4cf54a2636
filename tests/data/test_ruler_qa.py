"""RULER QA: the authors' prompt files, SQuAD/HotpotQA builders, the offline generator."""

import json
import random
import re
from pathlib import Path

import datasets
import pandas as pd
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from refine.data.ruler import count_tokens
from refine.data.ruler_qa import (
    QA_TEMPLATES,
    build_ruler_qa,
    format_qa_prompt,
    hotpotqa_corpus,
    load_qa_rows,
    read_qa_records,
    squad_corpus,
    synthetic_qa_corpus,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AUTHORS_QA = SHARED / "ruler_qa" / "ruler_squadqa_delta_net_4096_200_test.parquet"
WORDS = "amber basin cedar delta ember fjord grove harbor island jungle kettle lagoon meadow".split()


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))).capitalize() + "."


@pytest.fixture(scope="module")
def squad_rows() -> list[dict]:
    """Three articles of four paragraphs, two questions per paragraph, one unanswerable question."""
    rng = random.Random(0)
    rows = []
    for article in range(3):
        for para in range(4):
            context = f"Paragraph {article}-{para}. " + " ".join(_sentence(rng) for _ in range(6))
            context += "".join(f" Key {q} is answer-{article}-{para}-{q}." for q in range(2))
            for q in range(2):
                answer = f"answer-{article}-{para}-{q}"
                rows.append(
                    {
                        "id": f"{article}{para}{q}",
                        "title": f"Article {article}",
                        "context": context,
                        "question": f"What is key {q} of paragraph {article}-{para}?",
                        "answers": {"text": [answer, answer.upper()], "answer_start": [0, 0]},
                    }
                )
    rows[1]["answers"] = {"text": [], "answer_start": []}  # unanswerable, as in SQuAD v2
    return rows


@pytest.fixture(scope="module")
def hotpot_rows() -> list[dict]:
    rng = random.Random(1)
    return [
        {
            "id": str(i),
            "question": f"Which place links fact {i}?",
            "answer": f"place-{i}",
            "context": {
                "title": [f"Title {i}-{j}" for j in range(3)],
                "sentences": [[_sentence(rng) + " ", f"It mentions place-{i}."] for _ in range(3)],
            },
        }
        for i in range(12)
    ]


@pytest.fixture(scope="module")
def tokenizer(squad_rows):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=350, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([r["context"] for r in squad_rows] + list(QA_TEMPLATES.values()), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _split_prompt(prompt: str) -> tuple[list[str], str]:
    """Documents and question of an authors'-template prompt (test-side inverse of format_qa_prompt)."""
    head, tail = QA_TEMPLATES["authors"].split("{context}")
    tail_start, tail_end = tail.split("{query}")
    assert prompt.startswith(head) and prompt.endswith(tail_end)
    context, question = prompt[len(head) : -len(tail_end)].rsplit(tail_start, 1)
    documents = re.split(r"(?:^|\n\n)Document \d+:\n", context)[1:]
    return documents, question


@pytest.mark.skipif(not AUTHORS_QA.exists(), reason="shared RULER QA data absent")
def test_authors_file_reads_and_matches_our_prompt_format():
    records = read_qa_records(AUTHORS_QA)
    assert len(records) == 200
    for rec in records:
        documents, question = _split_prompt(rec["input"])
        assert len(documents) == 20
        assert format_qa_prompt(documents, question, "authors") == rec["input"]
        assert rec["outputs"] and all(isinstance(a, str) for a in rec["outputs"])
        assert rec["length"] == rec["prompt_length"] + 32 <= 4096
        assert rec["task"] == "ruler_squadqa"


def test_reader_parquet_and_jsonl_agree_and_errors_name_the_place(tmp_path):
    rows = [
        {
            "index": 3,
            "prompt": "Question: a?\nAnswer:",
            "answer": ["x", "y"],
            "prompt_length": 5,
            "task": "t",
        },
        {"index": 1, "prompt": "Question: b?\nAnswer:", "answer": ["z"], "prompt_length": 6, "task": "t"},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "qa.parquet")
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    from_parquet = read_qa_records(tmp_path / "qa.parquet")
    assert from_parquet == read_qa_records(tmp_path / "qa.jsonl")
    assert [r["outputs"] for r in from_parquet] == [["x", "y"], ["z"]]
    assert [r["length"] for r in from_parquet] == [37, 38]

    (tmp_path / "bad.jsonl").write_text(json.dumps({"index": 0, "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl: record 0: missing field 'answer'"):
        read_qa_records(tmp_path / "bad.jsonl")
    (tmp_path / "bad2.jsonl").write_text(json.dumps({"index": 0, "prompt": "p", "answer": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"bad2\.jsonl: record 0: field 'answer' must be a non-empty list"):
        read_qa_records(tmp_path / "bad2.jsonl")
    with pytest.raises(ValueError, match="expected a .parquet or .jsonl"):
        read_qa_records(tmp_path / "qa.csv")


def test_templates_are_exact():
    assert format_qa_prompt(["one", "two"], "Why?", "ruler") == (
        "Answer the question based on the given documents. Only give me the answer and do not output any "
        "other words.\n\nThe following are given documents.\n\nDocument 1:\none\n\nDocument 2:\ntwo\n\n"
        "Answer the question based on the given documents. Only give me the answer and do not output any "
        "other words.\n\nQuestion: Why? Answer:"
    )
    assert format_qa_prompt(["one"], "Why?").endswith("passages.\nDocument 1:\none\n\nAnswer the question "
                                                      "based on the given passages. Only give me the answer "
                                                      "and do not output any other words.\n\nQuestion: Why?"
                                                      "\nAnswer:")  # fmt: skip
    with pytest.raises(ValueError, match="unknown QA template"):
        format_qa_prompt([], "q", "chat")


def test_local_rows_load_from_jsonl_and_disk(tmp_path, squad_rows):
    path = tmp_path / "squad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in squad_rows))
    datasets.Dataset.from_list(squad_rows).save_to_disk(str(tmp_path / "disk"))
    from_json = squad_corpus(load_qa_rows("squad", path))
    from_disk = squad_corpus(load_qa_rows("squad", tmp_path / "disk"))
    assert from_json == from_disk == squad_corpus(squad_rows)
    with pytest.raises(ValueError, match="unknown QA dataset"):
        load_qa_rows("nq", path)


def test_squad_corpus_follows_ruler(squad_rows):
    corpus = squad_corpus(squad_rows)
    assert corpus.docs == sorted({r["context"] for r in squad_rows}) and len(corpus.docs) == 12
    assert len(corpus.questions) == len(squad_rows) - 1  # the unanswerable one is skipped
    for question in corpus.questions:
        (gold,) = question.gold
        title = corpus.docs[gold].split(".")[0].split()[1].split("-")[0]
        assert len(question.related) == 3
        assert all(corpus.docs[d].startswith(f"Paragraph {title}-") for d in question.related)
        assert question.outputs[0] in corpus.docs[gold]
    with pytest.raises(ValueError, match="squad row 0: missing field 'title'"):
        squad_corpus([{"context": "c", "question": "q", "answers": {"text": ["a"]}}])


def _documents(prompt: str) -> list[str]:
    return _split_prompt(prompt)[0]


@pytest.mark.parametrize("budget", [700, 900])
def test_build_squad_fits_budget_and_prefers_same_article(budget, squad_rows, tokenizer):
    corpus = squad_corpus(squad_rows)
    records = build_ruler_qa(corpus, budget, 6, tokenizer, seed=0, task="squad", tokens_to_generate=32)
    for rec, question in zip(records, corpus.questions, strict=False):
        assert rec["length"] == count_tokens(tokenizer, rec["input"]) + 32 <= budget
        documents = _documents(rec["input"])
        assert len(documents) == rec["num_docs"] >= 1
        assert documents.count(corpus.docs[question.gold[0]]) == 1
        same_article = {corpus.docs[d] for d in question.gold + question.related}
        if rec["num_docs"] <= 4:  # gold plus related paragraphs come before random ones
            assert set(documents) <= same_article
        else:
            assert same_article <= set(documents)
        assert rec["outputs"] == question.outputs
    bigger = build_ruler_qa(corpus, 2500, 6, tokenizer, seed=0, task="squad")
    assert min(r["num_docs"] for r in bigger) > max(r["num_docs"] for r in records)
    assert all(len(set(_documents(r["input"]))) == r["num_docs"] for r in bigger)  # no document twice
    assert bigger == build_ruler_qa(corpus, 2500, 6, tokenizer, seed=0, task="squad")
    assert bigger != build_ruler_qa(corpus, 2500, 6, tokenizer, seed=1, task="squad")


def test_budget_beyond_corpus_uses_every_document_once(squad_rows, tokenizer):
    corpus = squad_corpus(squad_rows)
    (rec,) = build_ruler_qa(corpus, 100_000, 1, tokenizer, seed=0)
    assert sorted(_documents(rec["input"])) == corpus.docs


def test_build_hotpotqa_keeps_all_gold_paragraphs(hotpot_rows, tokenizer):
    corpus = hotpotqa_corpus(hotpot_rows)
    assert len(corpus.docs) == 36 and all(len(q.gold) == 3 for q in corpus.questions)
    assert corpus.docs[corpus.questions[0].gold[0]].startswith("Title 0-0\n")
    records = build_ruler_qa(corpus, 1200, 4, tokenizer, seed=0, task="hotpotqa", template="ruler")
    for rec, question in zip(records, corpus.questions, strict=False):
        assert rec["length"] <= 1200 and rec["input"].endswith(f"Question: {question.query} Answer:")
        assert all(rec["input"].count(corpus.docs[d]) == 1 for d in question.gold)
    with pytest.raises(ValueError, match="cannot hold question 0's gold documents"):
        build_ruler_qa(corpus, 60, 1, tokenizer, seed=0)


def test_synthetic_corpus_and_prompts(tokenizer):
    pool = WORDS + "one two three four five six".split()
    corpus = synthetic_qa_corpus(pool, n_passages=150, seed=4)
    assert len(corpus.docs) == len(corpus.questions) == 150
    pattern = re.compile(r"The (\w+) of (\w+ \w+) is (\d+)\.")
    facts = [pattern.findall(doc) for doc in corpus.docs]
    assert all(len(f) == 3 for f in facts)
    assert len({f[0][1] for f in facts}) == 150  # one entity per passage
    records = build_ruler_qa(corpus, 1500, 10, tokenizer, seed=2, task="synthetic")
    for rec, question in zip(records, corpus.questions, strict=False):
        attribute, entity = re.fullmatch(r"What is the (\w+) of (\w+ \w+)\?", question.query).groups()
        stated = [
            v for f in pattern.findall(rec["input"]) for a, e, v in [f] if (a, e) == (attribute, entity)
        ]
        assert stated == question.outputs  # the asked fact is stated once, in the gold passage
        assert rec["num_docs"] > 5 and rec["length"] <= 1500
    assert corpus == synthetic_qa_corpus(pool, n_passages=150, seed=4)
    with pytest.raises(ValueError, match="too small"):
        synthetic_qa_corpus(["a", "b", "c"], n_passages=50, seed=0)
