"""Generated corpus: determinism, exact token lengths, closed vocabulary, consistent facts and queries."""

import os
import re
import subprocess
import sys

import pytest

from refine.data.corpus import (
    DENSE_KINDS,
    KEY_WORDS,
    NIAH_DOC_VARIANTS,
    NOISE_SENTENCES,
    CorpusConfig,
    format_fact,
    format_query,
    generate_documents,
    generate_pieces,
    niah_min_tokens,
    text_pieces,
    vocabulary_texts,
)
from refine.data.ruler import NIAH_VARIANTS, generate_niah
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


@pytest.mark.parametrize("kind", DENSE_KINDS)
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
        ({"segment_tokens": 64}, "segment_tokens"),
        ({"doc_tokens": 256, "segment_tokens": 8}, "segment_tokens"),
        ({"niah_variants": ["niah_single_3"]}, "niah_variants"),
        ({"niah_variants": []}, "niah_variants"),
        ({"niah_value_digits": 4}, "niah_value_digits"),
        ({"kind_weights": {"niah": 1.0}, "doc_tokens": 200}, "doc_tokens"),
    ],
)
def test_invalid_configs_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        CorpusConfig(**kwargs)


NEEDLE = re.compile(r"One of the special magic numbers for (\w+) is: (\d+)\.")
QUESTION = re.compile(
    r"\nWhat (?:is|are all) the special magic numbers? for ([\w, ]+) mentioned in the provided text\? "
    r"The special magic numbers? for \1 mentioned in the provided text (?:is|are)((?: \d+,)* \d+)\.\n"
)


def test_niah_shortest_documents_fit_the_variants():
    lengths = {v: niah_min_tokens(CorpusConfig(), v) for v in NIAH_DOC_VARIANTS}
    assert set(NIAH_DOC_VARIANTS) == {v for v, s in NIAH_VARIANTS.items() if s.value_type == "numbers"}
    assert max(lengths.values()) <= 256
    CorpusConfig(kind_weights={"niah": 1.0}, doc_tokens=max(lengths.values()))  # exactly long enough
    single = ["niah_single_1", "niah_multikey_2"]
    CorpusConfig(kind_weights={"niah": 1.0}, doc_tokens=100, niah_variants=single)


@pytest.mark.parametrize("doc_tokens", [229, 256, 512])
def test_niah_documents_have_exactly_doc_tokens_known_tokens(word, doc_tokens):
    for kind, pieces in generate_pieces(only("niah", doc_tokens=doc_tokens), 60, seed=doc_tokens):
        assert kind == "niah"
        ids = word(render_tokens(pieces), add_special_tokens=False)["input_ids"]
        assert ids == word.convert_tokens_to_ids(pieces) and len(ids) == doc_tokens
        assert word.unk_token_id not in ids


def test_niah_documents_are_ruler_prompts_answered_in_context_order():
    cfg = only("niah", doc_tokens=320)
    openings = set()
    for doc in generate_documents(cfg, 300, seed=3):
        question = QUESTION.search(doc)
        assert question, doc
        context, answer = doc[: question.start()], question.group(2).split(",")
        queried = question.group(1).replace(", and ", ", ").split(", ")
        needles = NEEDLE.findall(context)
        assert [v for k, v in needles if k in queried] == [a.strip() for a in answer]
        assert set(queried) <= set(cfg.keys) and all(len(v) == cfg.niah_value_digits for _, v in needles)
        openings.add(doc.split(" hidden")[0])
        filler = set(re.findall(r"\w+", doc[question.end() :]))
        assert filler <= set(re.findall(r"\w+", NOISE_SENTENCES))
    assert openings == {"A special magic number is", "Some special magic numbers are"}


def test_niah_documents_draw_every_variant_shape():
    counts = {"single": 0, "4 keys": 0, "4 values": 0, "4 queries": 0, "distractors": 0}
    for doc in generate_documents(only("niah", doc_tokens=256), 300, seed=4):
        needles = NEEDLE.findall(doc)
        keys = [k for k, _ in needles]
        if "The grass" not in doc.split("What")[0]:
            counts["distractors"] += 1
        elif len(set(keys)) == 1 and len(keys) == 4:
            counts["4 values"] += 1
        elif "are all" in doc:
            counts["4 queries"] += 1
        elif len(keys) == 4:
            counts["4 keys"] += 1
        else:
            counts["single"] += 1
    assert all(n > 20 for n in counts.values()), counts


def test_eval_prompts_use_only_whole_word_tokens(word):
    cfg = CorpusConfig()
    for variant in NIAH_DOC_VARIANTS:
        for rec in generate_niah(variant, 600, 3, word, seed=1, key_pool=list(cfg.keys), value_digits=3,
                                 tokens_to_generate=16):  # fmt: skip
            tokens = word.tokenize(rec["input"])
            assert tokens == text_pieces(rec["input"])  # no piece is spelled letter by letter


def test_segmented_dense_rows_are_runs_of_independent_documents():
    cfg = CorpusConfig(kind_weights={"recall": 1.0}, doc_tokens=100, segment_tokens=32)
    for _, pieces in generate_pieces(cfg, 100, seed=5):
        assert len(pieces) == 100
        for start, end in ((0, 32), (32, 64), (64, 100)):  # the last segment takes the remainder
            segment = render_tokens(pieces[start:end])
            facts, queries = FACT.findall(segment), QUERY.findall(segment)
            assert facts and sorted(queries) == sorted(facts)


def test_mixed_rows_keep_each_kind_and_the_dense_documents_unchanged():
    mixed = CorpusConfig(kind_weights={"recall": 0.5, "niah": 0.5}, doc_tokens=256, segment_tokens=32)
    kinds = [kind for kind, _ in generate_pieces(mixed, 400, seed=6)]
    assert 150 < kinds.count("niah") < 250
    plain = generate_documents(CorpusConfig(), 40, seed=6)
    assert plain == generate_documents(CorpusConfig(segment_tokens=32), 40, seed=6)


@pytest.mark.parametrize("kind", ["recall", "kvlist"])
def test_answer_prefixes_sit_between_query_and_answer(kind):
    prefixes = ["", "\nAnswer:", "\n\nAnswer:"]
    cfg = CorpusConfig(doc_tokens=32, kind_weights={kind: 1.0}, answer_prefixes=prefixes)
    seen = set()
    for _, pieces in generate_pieces(cfg, 300, seed=6):
        assert len(pieces) == 32
        text = render_tokens(pieces)
        facts = dict(re.findall(r"(\w+) is (\d+)\.", text)) if kind == "recall" else dict(
            re.findall(r"(\w+) (\d+)[,.]", text.split(".")[0] + "."))  # fmt: skip
        queries = re.findall(r"(\w+)\?(\n{0,2}(?:Answer:)?) (\d+)\.", text)
        assert queries and all(facts[key] == value for key, _, value in queries)
        seen |= {prefix for _, prefix, _ in queries}
    assert seen == set(prefixes)


def test_a_single_empty_answer_prefix_keeps_the_documents():
    plain = CorpusConfig(doc_tokens=32, kind_weights={"recall": 0.7, "kvlist": 0.3})
    explicit = CorpusConfig(doc_tokens=32, kind_weights={"recall": 0.7, "kvlist": 0.3}, answer_prefixes=[""])
    assert generate_documents(plain, 50, seed=7) == generate_documents(explicit, 50, seed=7)
    with pytest.raises(ValueError, match="corpus.answer_prefixes"):
        CorpusConfig(answer_prefixes=["Answer: "])
