"""Real text corpora for mid-training: long documents from local files or a Hugging Face dataset.

`load_text_corpus` reads documents in order, keeps those with at least `min_tokens` tokens under
the given tokenizer, cuts each to `max_tokens` tokens when set, and stops at `max_docs` — the
paper's mid-training data is long documents filtered to ≥16K tokens and cut to 16K.

Sources: a local `.txt` file (the whole file is one document), `.jsonl` file (one JSON object per
line, the text in `text_field`), `.parquet` file (the column `text_field`), or a directory of
those (all supported files below it, in sorted path order); a value that is not an existing path
is taken as a Hugging Face dataset name (streamed with `datasets.load_dataset`) only when it looks
like one (`owner/name`, `refine.config.looks_like_hub_name`), otherwise it is "not found". Every
error names the file and line or record (non-UTF-8 bytes included); a source none of whose
documents is long enough stops with an error (fewer than asked for is a warning).

A cut document is the original text up to the end of its `max_tokens`-th token (from the
tokenizer's offsets), not a decoding of the ids, so no decoding artefacts enter the corpus.
Re-tokenizing it gives `max_tokens` tokens for the word and byte tokenizers; a BPE tokenizer may
merge the last word differently, which the dataset writer's own cut to `seq_len` absorbs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pyarrow.parquet as pq
from tqdm import tqdm

from refine.config import looks_like_hub_name

logger = logging.getLogger(__name__)

SUFFIXES = (".txt", ".jsonl", ".parquet")
_BATCH = 64  # documents tokenized at once


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}, expected one of {SUFFIXES}")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no {'/'.join(SUFFIXES)} files in this directory")
    return files


def _text_of(record, field: str, where: str) -> str:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if field not in record:
        raise ValueError(f"{where}: no field {field!r} (fields: {sorted(record)})")
    text = record[field]
    if not isinstance(text, str):
        raise ValueError(f"{where}: field {field!r} is {type(text).__name__}, expected a string")
    return text


def _not_utf8(where: str, err: UnicodeDecodeError) -> ValueError:
    return ValueError(f"{where}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start})")


def _read_file(path: Path, field: str) -> Iterator[tuple[str, str]]:
    """(where, text) for every document of one local file."""
    if path.suffix == ".txt":
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise _not_utf8(str(path), err) from None
        yield str(path), text
    elif path.suffix == ".jsonl":
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                where = f"{path}:{line_no}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise _not_utf8(where, err) from None
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{where}: invalid JSON ({err})") from err
                yield where, _text_of(record, field, where)
    else:
        table = pq.ParquetFile(path)
        if field not in table.schema_arrow.names:
            raise ValueError(f"{path}: no column {field!r} (columns: {table.schema_arrow.names})")
        row = 0
        for batch in table.iter_batches(columns=[field]):
            for text in batch.column(0).to_pylist():
                where = f"{path} row {row}"
                if not isinstance(text, str):
                    raise ValueError(f"{where}: field {field!r} is {type(text).__name__}, expected a string")
                yield where, text
                row += 1


def _read_hub(name: str, field: str, split: str, subset: str | None) -> Iterator[tuple[str, str]]:
    import datasets  # imported here: slow to import, and only hub sources need it

    try:
        stream = datasets.load_dataset(name, subset, split=split, streaming=True)
    except Exception as err:  # any failure means "not loadable"; the message says why
        raise ValueError(f"{name!r} is neither a local path nor a loadable dataset: {err}") from err
    for index, record in enumerate(stream):
        where = f"{name}[{split}] record {index}"
        yield where, _text_of(record, field, where)


def _records(source: str | Path, field: str, split: str, subset: str | None) -> Iterator[tuple[str, str]]:
    path = Path(source).expanduser()
    if path.exists():
        for file in _local_files(path):
            yield from _read_file(file, field)
    elif isinstance(source, Path) or not looks_like_hub_name(source):
        raise FileNotFoundError(f"text corpus {path}: not found (nor a hub name owner/name)")
    else:
        yield from _read_hub(source, field, split, subset)


def _batches(records: Iterator[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    while batch := list(islice(records, _BATCH)):
        yield batch


def load_text_corpus(
    source: str | Path,
    tokenizer,
    min_tokens: int,
    max_docs: int,
    text_field: str = "text",
    max_tokens: int | None = None,
    split: str = "train",
    subset: str | None = None,
) -> list[str]:
    """Up to `max_docs` documents of `source` with >= `min_tokens` tokens, each cut to `max_tokens`.

    `split` and `subset` (the dataset configuration) apply to Hugging Face sources only.
    """
    if min_tokens < 0 or max_docs < 1:
        raise ValueError(
            f"load_text_corpus: need min_tokens >= 0 and max_docs >= 1, got {min_tokens}/{max_docs}"
        )
    if max_tokens is not None and max_tokens < max(min_tokens, 1):
        raise ValueError(
            f"load_text_corpus: max_tokens={max_tokens} must be >= 1 and >= min_tokens={min_tokens}"
        )
    docs: list[str] = []
    seen = 0
    with tqdm(total=max_docs, desc=f"documents from {source}", unit="doc", disable=None) as bar:
        for batch in _batches(_records(source, text_field, split, subset)):
            texts = [text for _, text in batch]
            encoded = tokenizer(
                texts, add_special_tokens=False, return_offsets_mapping=max_tokens is not None
            )
            for i, text in enumerate(texts):
                seen += 1
                n = len(encoded["input_ids"][i])
                if n < min_tokens:
                    continue
                if max_tokens is not None and n > max_tokens:
                    text = text[: encoded["offset_mapping"][i][max_tokens - 1][1]]
                docs.append(text)
                bar.update()
                if len(docs) == max_docs:
                    break
            if len(docs) == max_docs:
                break
    logger.info("kept %d of %d documents of %s with >= %d tokens", len(docs), seen, source, min_tokens)
    if not docs:
        raise ValueError(
            f"{source}: none of its {seen} documents has >= {min_tokens} tokens (the split's seq_len); "
            "use longer documents or a smaller seq_len"
        )
    if len(docs) < max_docs:
        logger.warning(
            "%s has only %d documents with >= %d tokens (asked for %d)",
            source,
            len(docs),
            min_tokens,
            max_docs,
        )
    return docs
