"""Token datasets on disk: the contract between the `refine data` stage and the training loop.

A dataset at `<path>.npy` is an int32 array [N, T] of token ids, each row one document cut to T
tokens or right-padded to T with the tokenizer's pad id; `<path>.json` beside it holds
{"seq_len", "pad_id", "num_docs", "tokens" (non-pad count), "tokenizer"}. Both files are written
to a temporary name and moved into place (`os.replace`), so a reader never sees half a file.
`TokenDataset` reads the pair back (memory-mapped) and checks that the two agree.

Padding is recognised by its id: a document must not contain the pad token itself (special
tokens are not produced from plain text), or its labels there would be masked too.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
_METADATA_KEYS = ("seq_len", "pad_id", "num_docs", "tokens", "tokenizer")


def dataset_paths(path_npy: str | Path) -> tuple[Path, Path]:
    """(`<path>.npy`, `<path>.json`) for a dataset path given with or without the `.npy` suffix."""
    path = Path(path_npy)
    npy = path if path.suffix == ".npy" else path.with_name(path.name + ".npy")
    return npy, npy.with_suffix(".json")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_token_dataset(
    docs: list[str], tokenizer, seq_len: int, path_npy: str | Path, add_bos: bool = False
) -> dict:
    """Tokenize `docs` (BOS first if `add_bos`), cut/right-pad to `seq_len`, save; return the metadata."""
    if seq_len < 1:
        raise ValueError(f"write_token_dataset: seq_len must be >= 1, got {seq_len}")
    if not docs:
        raise ValueError(f"{path_npy}: no documents to write (the source gave none)")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError(f"write_token_dataset: tokenizer {tokenizer.name_or_path!r} has no pad token")
    if add_bos and tokenizer.bos_token_id is None:
        raise ValueError(
            f"write_token_dataset: add_bos=True but tokenizer {tokenizer.name_or_path!r} has no BOS"
        )
    npy, meta_path = dataset_paths(path_npy)
    ids = np.full((len(docs), seq_len), pad_id, dtype=np.int32)  # [N, T]
    encoded = tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []
    tokens = 0
    for row, doc_ids in enumerate(encoded):
        doc_ids = ([tokenizer.bos_token_id] if add_bos else []) + list(doc_ids)
        doc_ids = doc_ids[:seq_len]
        if pad_id in doc_ids:
            raise ValueError(f"write_token_dataset: document {row} contains the pad id {pad_id}")
        ids[row, : len(doc_ids)] = doc_ids
        tokens += len(doc_ids)
    meta = {
        "seq_len": seq_len,
        "pad_id": int(pad_id),
        "num_docs": len(docs),
        "tokens": tokens,
        "tokenizer": str(tokenizer.name_or_path),
    }
    npy.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(npy, lambda f: np.save(f, ids))
    _atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    logger.info("wrote %d documents, %d tokens (seq_len %d) to %s", len(docs), tokens, seq_len, npy)
    return meta


def read_metadata(path_npy: str | Path) -> dict:
    """The metadata of a dataset, checked for its keys; errors name the file."""
    _, meta_path = dataset_paths(path_npy)
    if not meta_path.is_file():
        raise FileNotFoundError(f"token dataset metadata {meta_path} does not exist")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"token dataset metadata {meta_path} is not valid JSON: {err}") from err
    missing = [k for k in _METADATA_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"token dataset metadata {meta_path} lacks the keys {missing}")
    return meta


class TokenDataset(Dataset):
    """Rows of a token dataset as dict(input_ids, labels, attention_mask), each a LongTensor [T].

    `labels` equal `input_ids` with IGNORE_INDEX (-100) at pad positions; the training loop shifts
    them. `attention_mask` is 1 on tokens, 0 on padding.
    """

    def __init__(self, path_npy: str | Path):
        self.path, meta_path = dataset_paths(path_npy)
        if not self.path.is_file():
            raise FileNotFoundError(f"token dataset {self.path} does not exist")
        self.meta = read_metadata(self.path)
        try:
            self.ids = np.load(self.path, mmap_mode="r", allow_pickle=False)  # [N, T] int32
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"token dataset {self.path} is not a readable .npy file: {err}") from err
        if self.ids.ndim != 2 or self.ids.dtype != np.int32:
            raise ValueError(
                f"token dataset {self.path} must hold an int32 [N, T] array, "
                f"got {self.ids.dtype} {list(self.ids.shape)}"
            )
        expected = {
            "num_docs": self.ids.shape[0],
            "seq_len": self.ids.shape[1],
            "tokens": int(np.count_nonzero(self.ids != self.meta["pad_id"])),
        }
        wrong = {k: (self.meta[k], v) for k, v in expected.items() if self.meta[k] != v}
        if wrong:
            detail = ", ".join(
                f"{k}: {meta_path.name} says {m}, array has {a}" for k, (m, a) in wrong.items()
            )
            raise ValueError(f"token dataset {self.path} does not match its metadata ({detail})")
        if self.ids.shape[0] == 0 or expected["tokens"] == 0:
            raise ValueError(f"token dataset {self.path} holds no tokens ({self.ids.shape[0]} documents)")

    @property
    def seq_len(self) -> int:
        return int(self.meta["seq_len"])

    @property
    def pad_id(self) -> int:
        return int(self.meta["pad_id"])

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        input_ids = torch.from_numpy(np.asarray(self.ids[index], dtype=np.int64))  # [T]
        real = input_ids != self.pad_id
        labels = input_ids.masked_fill(~real, IGNORE_INDEX)
        return {"input_ids": input_ids, "labels": labels, "attention_mask": real.long()}
