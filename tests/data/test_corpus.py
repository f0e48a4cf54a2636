"""Generated corpus: determinism, exact token lengths, closed vocabulary, consistent facts and queries."""

import os
import re
import subprocess
import sys

import pytest

from refine.data.corpus import (
    KEY_WORDS,
    KINDS,
    NOISE_SENTENCES,
    CorpusConfig,
    format_fact,
    format_query,
    generate_documents,
    generate_pieces,
    vocabulary_texts,
)
from refine.data.tokenizer import SPACE, build_word_tokenizer, render_tokens

FACT = re.compile(r"(\w+) is (\d+)\.")
QUERY = re.compile(r"(\w+)\? (\d+)\.")
PAIR = re.compile(r"(\w+) (\d+)[,.]")


@pytest.fixture(scope="module")
def word(tmp_path_factory):
    return build_word_tokenizer(vocabulary_texts(CorpusConfig()), tmp_path_factory.mktemp("word"))


def only(kind, **kwargs):
    return CorpusConfig(kind_weights={kind: 1.0}, **kwargs)


def test_same_seed_same_documents_other_seed_other_documents():
    cfg = CorpusConfig()
    docs = generate_documents(cfg, 50, seed=7)
    assert docs == generate_documents(cfg, 50, seed=7)
    assert docs[:20] == generate_documents(cfg, 20, seed=7)  # a document depends only on (seed, index)
    assert sum(a != b for a, b in zip(docs, generate_documents(cfg, 50, seed=8), strict=True)) > 45


def test_documents_do_not_depend_on_the_hash_seed():
    code = (
        "import hashlib; from refine.data.corpus import CorpusConfig, generate_documents; "
        "print(hashlib.sha256('\\n'.join(generate_documents(CorpusConfig(), 30, 5)).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("doc_tokens", [16, 32, 100, 512])
def test_every_document_has_exactly_doc_tokens_known_tokens(word, kind, doc_tokens):
    n_docs = 200 if doc_tokens <= 32 else 20
    docs = generate_pieces(only(kind, doc_tokens=doc_tokens), n_docs, seed=doc_tokens)
    for doc_kind, pieces in docs:
        assert doc_kind == kind
        ids = word(render_tokens(pieces), add_special_tokens=False)["input_ids"]
        assert ids == word.convert_tokens_to_ids(pieces)
        assert len(ids) == doc_tokens
        assert word.unk_token_id not in ids


@pytest.mark.parametrize("doc_tokens", [32, 256])
def test_recall_queries_ask_every_fact_and_give_its_value(doc_tokens):
    cfg = only("recall", doc_tokens=doc_tokens, num_keys=20, value_min=100, value_max=120)
    counts = set()
    for doc in generate_documents(cfg, 200, seed=1):
        facts = dict(FACT.findall(doc))
        queries = QUERY.findall(doc)
        assert len(facts) == len(FACT.findall(doc))  # keys are distinct within a document
        assert sorted(queries) == sorted(facts.items())
        first_query = QUERY.search(doc).start()
        assert all(m.end() <= first_query for m in FACT.finditer(doc))
        assert set(facts) <= set(cfg.keys) and all(int(v) in cfg.values for v in facts.values())
        counts.add(len(facts))
    most = min(cfg.max_facts, int(cfg.fact_fraction * doc_tokens) // 8)
    assert counts == set(range(cfg.min_facts, most + 1))


def test_recall_filler_is_noise_sentences_ending_with_a_whole_sentence():
    noise_words = set(re.findall(r"\w+", NOISE_SENTENCES))
    for doc in generate_documents(only("recall", doc_tokens=128), 100, seed=2):
        context = doc[: doc.index("?")].rsplit(" ", 1)[0]  # everything before the first query
        assert context.endswith(".")
        assert set(re.findall(r"[A-Za-z]+", FACT.sub("", context))) <= noise_words


def test_kvlist_queries_every_pair_with_its_value():
    cfg = only("kvlist", doc_tokens=64)
    for doc in generate_documents(cfg, 200, seed=4):
        pairs = PAIR.findall(doc.split("?")[0].rsplit(" ", 1)[0])
        queries = QUERY.findall(doc)
        assert len(pairs) == min(cfg.max_kv_pairs, 64 // 7) == len(dict(pairs))
        assert sorted(queries) == sorted(pairs)


def test_repeat_copies_a_span_of_keys_and_values():
    cfg = only("repeat", doc_tokens=64)
    span_tokens = {SPACE + k for k in cfg.keys} | {f"{SPACE}{v}" for v in cfg.values}
    lengths = set()
    for _, pieces in generate_pieces(cfg, 200, seed=5):
        runs, run = [], []
        for piece in [*pieces, None]:
            if piece in span_tokens:
                run.append(piece)
            elif run:
                runs.append(run)
                run = []
        if len(runs) == 1:  # the copy follows the span directly
            half = len(runs[0]) // 2
            runs = [runs[0][:half], runs[0][half:]]
        assert len(runs) == 2 and runs[0] == runs[1]
        lengths.add(len(runs[0]))
    assert lengths == set(range(cfg.min_span, cfg.max_span + 1))


def test_prose_has_no_keys_or_numbers():
    for doc in generate_documents(only("prose", doc_tokens=64), 100, seed=6):
        words = set(re.findall(r"\w+", doc))
        assert not words & set(KEY_WORDS) and not any(w.isdigit() for w in words)


def test_kinds_follow_their_weights():
    weights = {"recall": 0.5, "kvlist": 0.3, "repeat": 0.2}
    kinds = [kind for kind, _ in generate_pieces(CorpusConfig(kind_weights=weights), 2000, seed=9)]
    for kind, weight in weights.items():
        expected, sd = 2000 * weight, (2000 * weight * (1 - weight)) ** 0.5
        assert abs(kinds.count(kind) - expected) < 5 * sd
    assert "prose" not in kinds


def test_formats_match_the_documents():
    assert FACT.fullmatch(format_fact("apple", 12)) and QUERY.fullmatch(format_query("apple") + " 12.")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"kind_weights": {"gossip": 1.0}}, "kind_weights"),
        ({"kind_weights": {"recall": 0.0}}, "kind_weights"),
        ({"num_keys": len(KEY_WORDS) + 1}, "num_keys"),
        ({"value_max": 1000}, "value_max"),
        ({"value_min": 5, "value_max": 4}, "value_min"),
        ({"min_facts": 3, "max_facts": 2}, "max_facts"),
        ({"fact_fraction": 0.0}, "fact_fraction"),
        ({"doc_tokens": 15}, "doc_tokens"),
        ({"doc_tokens": 16, "min_facts": 2}, "doc_tokens"),
        ({"min_span": 13}, "min_span"),
        ({"min_span": 11, "doc_tokens": 32}, "min_span"),
        ({"max_kv_pairs": 0}, "max_kv_pairs"),
        ({"num_keys": 1, "min_facts": 2, "max_facts": 2, "doc_tokens": 64}, "num_keys"),
    ],
)
def test_invalid_configs_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        CorpusConfig(**kwargs)
