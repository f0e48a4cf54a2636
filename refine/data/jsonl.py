"""JSON Lines files: read with errors that name the file and line; write atomically."""

from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: str | Path) -> list[dict]:
    """Every non-empty line of `path` as a dict; a bad line raises naming the file and line."""
    path = Path(path)
    records = []
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}: line {line_no} is not UTF-8 text (byte offset {err.start})") from None
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {line_no} is not JSON: {err}") from err
    return records


def write_jsonl(records: list[dict], path: str | Path) -> None:
    """Write `records` one per line, through a temporary file (no half-written file on a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    tmp.replace(path)
