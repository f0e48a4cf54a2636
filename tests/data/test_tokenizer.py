"""Word and byte tokenizers: exact round trips, single-token numbers, saved directories that load."""

import json
import random
import uuid

import pytest
from transformers import PreTrainedTokenizerFast

from refine.data.corpus import CorpusConfig, generate_documents, vocabulary_texts
from refine.data.tokenizer import (
    SPACE,
    build_byte_tokenizer,
    build_word_tokenizer,
    load_tokenizer,
    render_tokens,
)

ODD_TEXTS = [
    "1234567 and 1000000 and 007",
    "Line one.\nLine two,\tindented;  double  spaced ",
    " leading space and trailing. ",
    "Unknown words like zyzzyva, (parenthesised) [x] {y} $5 50% a-b_c 'quoted' \"also\"!",
    "the end?",
]


@pytest.fixture(scope="module")
def word_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("word")
    build_word_tokenizer(vocabulary_texts(CorpusConfig()), path)
    return path


@pytest.fixture(scope="module")
def word(word_dir):
    return load_tokenizer(word_dir)


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_saved_directory_loads_with_special_tokens(word_dir, word, tmp_path):
    assert isinstance(word, PreTrainedTokenizerFast)
    specials = [word.pad_token_id, word.unk_token_id, word.bos_token_id, word.eos_token_id]
    assert None not in specials and len(set(specials)) == 4
    assert encode(word, "apple is 5.") == word("apple is 5.")["input_ids"]  # adds no specials itself
    byte = load_tokenizer(build_byte_tokenizer(tmp_path / "byte").name_or_path)
    assert isinstance(byte, PreTrainedTokenizerFast) and len(byte) == 260
    assert byte.pad_token_id is not None and byte.bos_token_id != byte.eos_token_id


def test_generated_documents_round_trip_without_unk(word):
    docs = generate_documents(CorpusConfig(doc_tokens=64), 100, seed=3)
    for doc in docs:
        ids = encode(word, doc)
        assert word.unk_token_id not in ids
        assert word.decode(ids) == doc


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_any_ascii_text_round_trips(word, text):
    ids = encode(word, text)
    assert word.unk_token_id not in ids
    assert word.decode(ids) == text


def test_uuids_round_trip(word):
    rng = random.Random(0)
    for _ in range(20):
        value = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ids = encode(word, f"key is {value}.")
        assert word.unk_token_id not in ids
        assert word.decode(ids) == f"key is {value}."


def test_numbers_up_to_999_are_single_tokens(word):
    for n in range(1000):
        ids = encode(word, f"apple? {n}")
        assert word.convert_ids_to_tokens(ids[-1]) == f"{SPACE}{n}"
        assert len(ids) == 3
    digits = word.convert_ids_to_tokens(encode(word, "1234567"))
    assert digits[0] == f"{SPACE}123" and "".join(digits[1:]) == "4567"


def test_a_continuation_decodes_to_its_answer(word):
    prompt, answer = encode(word, "kettle is 682. kettle?"), encode(word, "kettle is 682. kettle? 682.")
    assert answer[: len(prompt)] == prompt
    assert word.decode(answer[len(prompt) :]) == "682."


def test_rare_pieces_are_spelled_and_extra_tokens_forced(tmp_path):
    texts = ["common common common rare"]
    tok = build_word_tokenizer(texts, tmp_path / "a", min_freq=2)
    assert f"{SPACE}common" in tok.get_vocab() and f"{SPACE}rare" not in tok.get_vocab()
    ids = encode(tok, texts[0])
    assert tok.unk_token_id not in ids and tok.decode(ids) == texts[0]
    forced = build_word_tokenizer(texts, tmp_path / "b", extra_tokens=["rare"], min_freq=2)
    assert f"{SPACE}rare" in forced.get_vocab()


def test_build_is_deterministic(tmp_path):
    texts = vocabulary_texts(CorpusConfig())
    build_word_tokenizer(texts, tmp_path / "a")
    build_word_tokenizer(list(reversed(texts)), tmp_path / "b")
    a = json.loads((tmp_path / "a" / "tokenizer.json").read_text())["model"]["vocab"]
    b = json.loads((tmp_path / "b" / "tokenizer.json").read_text())["model"]["vocab"]
    assert a == b


def test_non_ascii_characters_of_the_texts_round_trip(tmp_path):
    tok = build_word_tokenizer(["café naïve"], tmp_path)
    assert tok.decode(encode(tok, "naïf café")) == "naïf café"
    assert tok.unk_token_id in encode(tok, "日本")  # never seen: UNK, not a crash


def test_byte_tokenizer_ids_are_the_bytes(tmp_path):
    byte = build_byte_tokenizer(tmp_path)
    for text in [*ODD_TEXTS, "héllo wörld ∑ 日本\n"]:
        ids = encode(byte, text)
        assert ids == list(text.encode("utf-8"))
        assert byte.decode(ids) == text


def test_render_tokens_requires_a_leading_space_piece(word):
    pieces = [f"{SPACE}apple", f"{SPACE}is", f"{SPACE}5", "."]
    assert word.convert_tokens_to_ids(pieces) == encode(word, render_tokens(pieces))
    with pytest.raises(ValueError, match="first piece"):
        render_tokens([".", f"{SPACE}apple"])


def test_min_freq_is_validated(tmp_path):
    with pytest.raises(ValueError, match="min_freq"):
        build_word_tokenizer(["a"], tmp_path, min_freq=0)
