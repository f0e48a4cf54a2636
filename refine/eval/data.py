"""The `refine eval-data` stage: every evaluation and post-training item of a study, written once.

Outputs (under `<results>/data/eval/`), all JSONL with one record per line:
- `niah.jsonl`: RULER NIAH prompts for every variant × length (× depth) × sample
  (`refine.data.ruler`; fields `input, outputs, length, variant, depth, ...`);
- `qa_test.jsonl`: RULER QA test prompts per length, from the source named by `eval.qa.source`:
  `synthetic` (generated offline), a local `.parquet`/`.jsonl` in the authors' prompt format, or
  `squad` / `hotpotqa` (Hugging Face datasets, paper config);
- `qa_train.jsonl`: post-training QA items (prompt + gold answers), built like the test items
  from disjoint questions (synthetic) or the training split (SQuAD/HotpotQA);
- `longbench/<task>.jsonl`: the LongBench suite: the synthetic LongBench-format suite (default,
  every record marked `source: synthetic`) or copies of nothing when `eval.longbench.source` is a
  directory of real data (it is then read in place by the evaluation).

Evaluation items depend on the tokenizer (exact token budgets), so this stage runs after
`refine data`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from refine.data.build import corpus_config
from refine.data.jsonl import read_jsonl as read_records
from refine.data.jsonl import write_jsonl
from refine.data.ruler import TooShortError, generate_niah
from refine.data.ruler_qa import (
    build_ruler_qa,
    hotpotqa_corpus,
    load_qa_rows,
    read_qa_records,
    squad_corpus,
    synthetic_qa_corpus,
)
from refine.data.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

# Seed streams: test and training items never share a question.
QA_TEST_SEED, QA_TRAIN_SEED, NIAH_SEED = 7_000_001, 7_500_001, 8_000_001


def read_jsonl(path: str | Path) -> list[dict]:
    """Evaluation records of a file written by this stage (clear error when it was not run)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: evaluation data not found (run `refine eval-data` first)")
    return read_records(path)


def word_pool(cfg: dict) -> list[str]:
    """The closed word pool of the generated evaluation texts: the corpus's key words."""
    return list(corpus_config(cfg).keys)


def niah_records(cfg: dict, tokenizer) -> list[dict]:
    spec = cfg["eval"]["niah"]
    key_pool = word_pool(cfg) if spec["key_pool"] == "corpus" else None
    records = []
    depths = spec["depths"] or [None]
    for variant in spec["variants"]:
        for length in spec["lengths"]:
            for depth in depths:
                seed = NIAH_SEED + length * 101 + (0 if depth is None else int(depth) + 1)
                try:
                    recs = generate_niah(
                        variant,
                        length,
                        spec["samples"],
                        tokenizer,
                        seed,
                        depth_percent=depth,
                        haystack=spec["haystack"],
                        essay_dir=spec["essay_dir"],
                        key_pool=key_pool,
                        value_digits=spec["value_digits"],
                        tokens_to_generate=spec["max_new_tokens"],
                        template=spec["template"],
                    )
                except TooShortError as err:  # e.g. 4 needles in 64 tokens: the cell stays empty
                    log.warning("skipping %s at %d tokens: %s", variant, length, err)
                    continue
                for rec in recs:
                    rec.update(context_length=length, depth_setting=depth)
                records += recs
    return records


def _qa_corpus(cfg: dict, split: str):
    spec = cfg["eval"]["qa"]
    source = spec["source"]
    if source == "synthetic":
        n = spec["samples"] if split == "test" else spec["train_samples"]
        seed = QA_TEST_SEED if split == "test" else QA_TRAIN_SEED
        return synthetic_qa_corpus(word_pool(cfg), max(n, spec["num_docs"]), seed, spec["facts"])
    rows = load_qa_rows(source, split="validation" if split == "test" else "train")
    return squad_corpus(rows) if source == "squad" else hotpotqa_corpus(rows)


def qa_records(cfg: dict, tokenizer, split: str) -> list[dict]:
    spec = cfg["eval"]["qa"]
    if spec["source"] not in ("synthetic", "squad", "hotpotqa"):
        path = spec["train_source"] if split == "train" else spec["source"]
        if path is None:
            return []
        records = read_qa_records(path, spec["max_new_tokens"]) if split == "test" else read_qa_records(path)
        if not records:  # an empty test file would score NaN; an empty training file trains nothing
            key = "eval.qa.train_source" if split == "train" else "eval.qa.source"
            raise ValueError(f"{path}: no QA records (empty file), for {key}")
        return records
    corpus = _qa_corpus(cfg, split)
    records = []
    lengths = spec["lengths"] if split == "test" else [spec["train_length"]]
    n = spec["samples"] if split == "test" else spec["train_samples"]
    for length in lengths:
        seed = (QA_TEST_SEED if split == "test" else QA_TRAIN_SEED) + length
        for rec in build_ruler_qa(
            corpus, length, n, tokenizer, seed, tokens_to_generate=spec["max_new_tokens"]
        ):
            rec.update(context_length=length, dataset=spec["source"])
            records.append(rec)
    return records


EVAL_DATA_PARTS = ("niah", "qa_test", "qa_train", "longbench")


def build_eval_data(cfg: dict, tokenizer_dir: str | Path, out_dir: str | Path, only: str | None = None) -> dict:
    """Every evaluation file (`only`: one of `EVAL_DATA_PARTS`, so the workflow reruns only the
    part a config edit touches); the summary goes to `summary.json` (`<only>.summary.json`)."""
    from refine.data.synthetic_longbench import write_synthetic_longbench

    if only not in (None, *EVAL_DATA_PARTS):
        raise ValueError(f"--only: expected one of {EVAL_DATA_PARTS}, got {only!r}")
    parts = EVAL_DATA_PARTS if only is None else (only,)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(tokenizer_dir)
    summary = {}
    if "niah" in parts:
        niah = niah_records(cfg, tokenizer)
        write_jsonl(niah, out_dir / "niah.jsonl")
        summary["niah"] = len(niah)
    for split in ("test", "train"):
        if f"qa_{split}" in parts:
            recs = qa_records(cfg, tokenizer, split)
            write_jsonl(recs, out_dir / f"qa_{split}.jsonl")
            summary[f"qa_{split}"] = len(recs)
    lb = cfg["eval"]["longbench"]
    if "longbench" in parts:
        (out_dir / "longbench").mkdir(parents=True, exist_ok=True)
    if "longbench" in parts and lb["source"] == "synthetic":
        paths = write_synthetic_longbench(
            out_dir / "longbench",
            word_pool(cfg),
            tasks=lb["tasks"],
            records_per_task=lb["records_per_task"],
            context_words=lb["context_words"],
            seed=lb["seed"],
        )
        summary["longbench"] = {task: str(path) for task, path in paths.items()}
    (out_dir / ("summary.json" if only is None else f"{only}.summary.json")).write_text(json.dumps(summary, indent=2))
    log.info("evaluation data: %s", summary)
    return summary
