"""The `qa` and `longbench` corpus kinds: exact token lengths, answered evaluation formats, no change at weight 0."""

import re

import pytest

from refine.data import corpus
from refine.data.corpus import CorpusConfig, generate_documents, generate_pieces, vocabulary_texts
from refine.data.longbench_spec import DATASET_TO_PROMPT, PAPER_TASKS
from refine.data.ruler_qa import QA_TEMPLATES
from refine.data.synthetic_longbench import synthetic_record, trec_cues
from refine.data.tokenizer import build_word_tokenizer, render_tokens

MIXED = {"recall": 0.4, "qa": 0.3, "longbench": 0.3}
QUESTION = re.compile(r"Question: What is the (\w+) of (\w+ \w+)\?\nAnswer: (\d+)\n")


@pytest.fixture(scope="module")
def word(tmp_path_factory):
    cfg = CorpusConfig(kind_weights=MIXED)
    return build_word_tokenizer(vocabulary_texts(cfg), tmp_path_factory.mktemp("word"))


@pytest.mark.parametrize("doc_tokens", [192, 256, 512])
def test_task_documents_have_exactly_doc_tokens_whole_tokens(word, doc_tokens):
    cfg = CorpusConfig(doc_tokens=doc_tokens, segment_tokens=32, kind_weights=MIXED)
    docs = generate_pieces(cfg, 60, seed=3)
    assert {kind for kind, _ in docs} == set(MIXED)
    vocab = word.get_vocab()
    for kind, pieces in docs:
        assert all(p in vocab for p in pieces), (kind, [p for p in pieces if p not in vocab])
        assert len(word(render_tokens(pieces))["input_ids"]) == doc_tokens, kind


def test_qa_documents_are_authors_prompts_answered_from_their_passage():
    cfg = CorpusConfig(doc_tokens=256, kind_weights={"qa": 1.0})
    head = QA_TEMPLATES["authors"].split("{context}")[0]
    for text in generate_documents(cfg, 20, seed=1):
        assert text.startswith(head)
        attribute, entity, value = QUESTION.search(text).groups()
        assert f"The {attribute} of {entity} is {value}." in text.split("Question:")[0]  # the gold passage


def test_longbench_documents_are_the_task_prompt_then_the_first_answer():
    cfg = CorpusConfig(doc_tokens=1024, longbench_context_words=50, kind_weights={"longbench": 1.0})
    seen = set()
    for text in generate_documents(cfg, 40, seed=2):
        task = next(t for t in PAPER_TASKS if text.startswith(DATASET_TO_PROMPT[t].split("{")[0]))
        seen.add(task)
        tail = DATASET_TO_PROMPT[task].rsplit("}", 1)[1]
        assert tail in text, task  # not cut: the whole prompt fits 1024 tokens
    assert len(seen) >= 8  # the tasks are drawn uniformly


def test_longbench_documents_use_the_suites_generator_with_their_own_seed(monkeypatch):
    cfg = CorpusConfig(doc_tokens=1024, longbench_context_words=50, kind_weights={"longbench": 1.0},
                       longbench_tasks=("hotpotqa",))  # fmt: skip
    monkeypatch.setattr(corpus, "task_seed", lambda kind, rng: 5)
    record = synthetic_record(cfg.keys, "hotpotqa", 0, 50, 5, trec_cues(cfg.keys, 5))
    prompt = DATASET_TO_PROMPT["hotpotqa"].format(context=record["context"], input=record["input"])
    # the answer follows as a continuation: after a space (its words are spaced tokens)
    assert generate_documents(cfg, 1, seed=0)[0].startswith(prompt + " " + record["answers"][0] + "\n")


def test_long_prompts_are_cut_in_the_middle_and_keep_the_question():
    cfg = CorpusConfig(doc_tokens=128, longbench_context_words=200, kind_weights={"longbench": 1.0},
                       longbench_tasks=("narrativeqa",))  # fmt: skip
    tail = DATASET_TO_PROMPT["narrativeqa"].rsplit("}", 1)[1]
    for text in generate_documents(cfg, 5, seed=0):
        assert text.startswith(DATASET_TO_PROMPT["narrativeqa"].split("{")[0])
        assert tail in text


def test_zero_weight_task_kinds_change_nothing():
    plain = CorpusConfig(doc_tokens=256, segment_tokens=32, kind_weights={"recall": 0.7, "kvlist": 0.3})
    zero = CorpusConfig(doc_tokens=256, segment_tokens=32,
                        kind_weights={"recall": 0.7, "kvlist": 0.3, "qa": 0.0, "longbench": 0.0})  # fmt: skip
    assert generate_documents(plain, 30, seed=4) == generate_documents(zero, 30, seed=4)
    assert vocabulary_texts(plain) == vocabulary_texts(zero) == vocabulary_texts(CorpusConfig())


def test_qa_rows_too_short_for_one_passage_name_the_key():
    with pytest.raises(ValueError, match="doc_tokens"):
        generate_documents(CorpusConfig(doc_tokens=32, kind_weights={"qa": 1.0}), 1, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"longbench_tasks": ("gov_report",)}, "longbench_tasks"),
        ({"qa_passages": 1}, "qa_passages"),
        ({"longbench_context_words": 10}, "longbench_context_words"),
        ({"num_keys": 20, "kind_weights": {"longbench": 1.0}}, "num_keys"),
    ],
)
def test_invalid_task_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        CorpusConfig(**kwargs)


def test_qa_follow_up_questions_ask_other_passages_of_the_prompt(word):
    cfg = CorpusConfig(doc_tokens=256, kind_weights={"qa": 1.0}, qa_facts=1, qa_questions=4)
    vocab = word.get_vocab()
    for _, pieces in generate_pieces(cfg, 20, seed=4):
        assert all(p in vocab for p in pieces)
        text = render_tokens(pieces)
        assert len(word(text)["input_ids"]) == 256
        passages, asked = text.split("Question:", 1)[0], QUESTION.findall(text)
        assert len(asked) == 4  # the item's question and three follow-ups
        assert len({(a, e) for a, e, _ in asked}) == 4
        for attribute, entity, value in asked:
            assert f"The {attribute} of {entity} is {value}." in passages


def test_single_question_qa_documents_are_the_evaluation_item_answered():
    cfg = CorpusConfig(doc_tokens=256, kind_weights={"qa": 1.0}, qa_facts=1)
    for text in generate_documents(cfg, 10, seed=5):
        assert text.count("Answer:") == 1 and text.count("Question:") == 1


@pytest.mark.parametrize("doc_tokens", [64, 128])
def test_qa_dense_documents_answer_every_passage_they_number(word, doc_tokens):
    cfg = CorpusConfig(doc_tokens=doc_tokens, segment_tokens=32, kind_weights={"recall": 0.5, "qa_dense": 0.5},
                       qa_facts=1)  # fmt: skip
    vocab = word.get_vocab()
    docs = generate_pieces(cfg, 40, seed=8)
    assert {kind for kind, _ in docs} == {"recall", "qa_dense"}
    for kind, pieces in docs:
        text = render_tokens(pieces)
        assert all(p in vocab for p in pieces) and len(word(text)["input_ids"]) == doc_tokens
        if kind == "qa_dense":
            passages = re.findall(r"Document \d+:\nThe (\w+) of (\w+ \w+) is (\d+)\.", text)
            assert passages and sorted(QUESTION.findall(text)) == sorted(passages)
    with pytest.raises(ValueError, match="corpus.doc_tokens=16 cannot hold a `qa_dense` document"):
        generate_pieces(CorpusConfig(doc_tokens=16, kind_weights={"qa_dense": 1.0}), 1, seed=0)
