"""Token datasets on disk and the real-corpus reader, on fixtures written here."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from refine.data.corpus import CorpusConfig, generate_documents, vocabulary_texts
from refine.data.dataset import IGNORE_INDEX, TokenDataset, write_token_dataset
from refine.data.real_corpus import load_text_corpus
from refine.data.tokenizer import build_word_tokenizer


@pytest.fixture(scope="module")
def word(tmp_path_factory):
    return build_word_tokenizer(vocabulary_texts(CorpusConfig()), tmp_path_factory.mktemp("word"))


@pytest.fixture(scope="module")
def texts():
    """Prose documents of 16 … 80 tokens, in a shuffled order."""
    docs = []
    for i, n in enumerate([40, 16, 80, 24, 64, 32, 72, 48]):
        docs += generate_documents(CorpusConfig(doc_tokens=n, kind_weights={"prose": 1.0}), 1, seed=i)
    return docs


def n_tokens(tok, text):
    return len(tok(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("add_bos", [False, True])
def test_write_then_read_gives_cut_padded_rows(word, texts, tmp_path, add_bos):
    seq_len = 40
    meta = write_token_dataset(texts, word, seq_len, tmp_path / "train.npy", add_bos=add_bos)
    data = TokenDataset(tmp_path / "train.npy")
    assert len(data) == len(texts) == meta["num_docs"]
    assert json.loads((tmp_path / "train.json").read_text()) == meta == data.meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json", "train.npy"]  # no temporary left
    total = 0
    for text, row in zip(texts, data, strict=True):
        ids = ([word.bos_token_id] if add_bos else []) + word(text, add_special_tokens=False)["input_ids"]
        ids = ids[:seq_len]
        n = len(ids)
        total += n
        assert row["input_ids"].dtype == row["labels"].dtype == row["attention_mask"].dtype == torch.long
        assert row["input_ids"][:n].tolist() == ids
        assert row["input_ids"][n:].eq(word.pad_token_id).all()
        assert row["labels"][:n].tolist() == ids and row["labels"][n:].eq(IGNORE_INDEX).all()
        assert row["attention_mask"].tolist() == [1] * n + [0] * (seq_len - n)
    assert meta["tokens"] == total and meta["seq_len"] == seq_len and meta["pad_id"] == word.pad_token_id
    assert meta["tokenizer"] == word.name_or_path


def test_path_without_suffix_names_the_same_files(word, texts, tmp_path):
    write_token_dataset(texts, word, 16, tmp_path / "heldout")
    assert (tmp_path / "heldout.npy").is_file() and (tmp_path / "heldout.json").is_file()
    assert len(TokenDataset(tmp_path / "heldout")) == len(texts)


def test_missing_corrupt_or_mismatched_files_are_named(word, texts, tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        TokenDataset(tmp_path / "absent.npy")
    path = tmp_path / "d.npy"
    write_token_dataset(texts, word, 16, path)
    meta = json.loads((tmp_path / "d.json").read_text())
    (tmp_path / "d.json").write_text(json.dumps({**meta, "seq_len": 17}))
    with pytest.raises(ValueError, match=r"d\.npy.*seq_len"):
        TokenDataset(path)
    (tmp_path / "d.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "pad_id"}))
    with pytest.raises(ValueError, match=r"d\.json.*pad_id"):
        TokenDataset(path)
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"d\.json"):
        TokenDataset(path)
    (tmp_path / "d.json").write_text(json.dumps(meta))
    path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"d\.npy"):
        TokenDataset(path)
    np.save(path, np.zeros((len(texts), 16), dtype=np.int64))
    with pytest.raises(ValueError, match="int32"):
        TokenDataset(path)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_filtering_keeps_long_documents_in_order(word, texts, tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts)])
    long_enough = [t for t in texts if n_tokens(word, t) >= 40]
    assert load_text_corpus(tmp_path / "c.jsonl", word, min_tokens=40, max_docs=100) == long_enough
    assert load_text_corpus(tmp_path / "c.jsonl", word, min_tokens=40, max_docs=2) == long_enough[:2]


def test_cut_documents_are_prefixes_of_max_tokens(word, texts, tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"body": t} for t in texts])
    docs = load_text_corpus(tmp_path / "c.jsonl", word, 24, 100, text_field="body", max_tokens=30)
    kept = [t for t in texts if n_tokens(word, t) >= 24]
    assert len(docs) == len(kept)
    for doc, text in zip(docs, kept, strict=True):
        assert text.startswith(doc) and n_tokens(word, doc) == min(30, n_tokens(word, text))


def test_parquet_txt_and_directory_sources_agree_with_jsonl(word, texts, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts[:4]])
    pq.write_table(pa.table({"text": texts[4:], "n": list(range(4))}), tmp_path / "b.parquet")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text(texts[0])
    (tmp_path / "notes.md").write_text("ignored")
    expected = [t for t in [*texts, texts[0]] if n_tokens(word, t) >= 20]
    assert load_text_corpus(tmp_path, word, 20, 100) == expected
    assert load_text_corpus(tmp_path / "b.parquet", word, 20, 100) == [t for t in texts[4:] if t in expected]


def test_reader_errors_name_the_file_record_and_field(word, tmp_path):
    write_jsonl(tmp_path / "c.jsonl", [{"text": "a b c"}, {"content": "d e f"}])
    with pytest.raises(ValueError, match=r"c\.jsonl:2.*'text'.*content"):
        load_text_corpus(tmp_path / "c.jsonl", word, 0, 10)
    write_jsonl(tmp_path / "n.jsonl", [{"text": 5}])
    with pytest.raises(ValueError, match=r"n\.jsonl:1.*'text'"):
        load_text_corpus(tmp_path / "n.jsonl", word, 0, 10)
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{broken\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_text_corpus(tmp_path / "bad.jsonl", word, 0, 10)
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=r"p\.parquet.*'text'"):
        load_text_corpus(tmp_path / "p.parquet", word, 0, 10)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_text_corpus(tmp_path / "missing.jsonl", word, 0, 10)
    with pytest.raises(ValueError, match="max_tokens"):
        load_text_corpus(tmp_path / "p.parquet", word, 10, 10, max_tokens=5)


def test_non_utf8_bytes_name_the_file_and_line(word, tmp_path):
    (tmp_path / "c.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"c\.jsonl:2: not UTF-8"):
        load_text_corpus(tmp_path / "c.jsonl", word, 0, 10)
    (tmp_path / "t.txt").write_bytes(b"good words \xff\xfe then more")
    with pytest.raises(ValueError, match=r"t\.txt: not UTF-8 .*0xff"):
        load_text_corpus(tmp_path / "t.txt", word, 0, 10)


def test_a_corpus_of_only_short_documents_stops_naming_the_source(word, texts, tmp_path):
    write_jsonl(tmp_path / "short.jsonl", [{"text": t} for t in texts])
    longest = max(n_tokens(word, t) for t in texts)
    message = rf"short\.jsonl: none of its {len(texts)} documents has >= {longest + 1} tokens"
    with pytest.raises(ValueError, match=message):
        load_text_corpus(tmp_path / "short.jsonl", word, longest + 1, 10)
    with pytest.raises(ValueError, match="no documents"):
        write_token_dataset([], word, 16, tmp_path / "empty.npy")


def test_a_missing_relative_path_is_not_found_not_a_hub_name(word, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for missing in ("data/corpus", "corpus.jsonl", "corpus"):
        with pytest.raises(FileNotFoundError, match="not found"):
            load_text_corpus(missing, word, 0, 10)
