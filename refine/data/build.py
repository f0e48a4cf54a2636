"""The `refine data` stage: tokenizer and token datasets for one study.

Writes into the output directory: `tokenizer/` (a Hugging Face tokenizer directory) and, for
every split of `data` (pretrain, midtrain, heldout), `<split>.npy` + `<split>.json` in the
format of `refine.data.dataset`. Generated splits come from `refine.data.corpus` with the
split's own seed offset, so held-out documents never repeat training ones; a split whose
`source` is a path or a hub dataset name is read by `refine.data.real_corpus`. A generated split's
`corpus` (optional) holds `CorpusConfig` fields that differ for that split, merged over the study's
`corpus` (e.g. the evaluation-format kinds `qa`/`longbench` and short dense segments in pretraining
only, while mid-training keeps its long documents); the tokenizer covers every split's documents.
"""

from __future__ import annotations

import logging
from pathlib import Path

from refine.config import build_dataclass
from refine.data import ruler, ruler_qa
from refine.data.corpus import CorpusConfig, generate_documents, vocabulary_texts
from refine.data.dataset import write_token_dataset
from refine.data.longbench_spec import DATASET_TO_PROMPT, TREC_CLASSES
from refine.data.real_corpus import load_text_corpus
from refine.data.tokenizer import build_byte_tokenizer, build_word_tokenizer, load_tokenizer

log = logging.getLogger(__name__)

# Distinct seed streams per split: held-out text is never a training document.
SPLIT_SEED_OFFSET = {"pretrain": 0, "midtrain": 1_000_003, "heldout": 2_000_003}


def corpus_config(cfg: dict, seq_len: int | None = None, split: str | None = None) -> CorpusConfig:
    """The study's `corpus` with `data.<split>.corpus` merged over it (`split` None: the study's)."""
    values = dict(cfg.get("corpus", {}))
    if split is not None:
        values.update((cfg["data"].get(split) or {}).get("corpus") or {})
    if seq_len is not None:
        values["doc_tokens"] = seq_len
    return build_dataclass(CorpusConfig, values, "corpus")


def eval_vocabulary_texts() -> list[str]:
    """Texts holding every fixed word of the evaluation prompts (RULER NIAH and QA templates,
    LongBench prompt templates and trec labels), for a closed word-level vocabulary."""
    texts = [ruler.NIAH_TEMPLATE, ruler.NIAH_ANSWER_PREFIX, ruler.NEEDLE, " ".join(ruler.NEEDLE_TYPES)]
    texts += list(ruler_qa.QA_TEMPLATES.values()) + list(DATASET_TO_PROMPT.values()) + list(TREC_CLASSES)
    texts.append("numbers words uuids number word uuid are is")
    return texts


def build_tokenizer(cfg: dict, out_dir: Path):
    kind = cfg["tokenizer"]["kind"]
    if kind == "word":
        texts = list(vocabulary_texts(corpus_config(cfg)))
        for split, spec in cfg["data"].items():  # a split's own corpus may emit more pieces
            if spec and spec.get("corpus"):
                texts += [t for t in vocabulary_texts(corpus_config(cfg, split=split)) if t not in texts]
        texts += eval_vocabulary_texts()
        return build_word_tokenizer(texts, out_dir)
    if kind == "byte":
        return build_byte_tokenizer(out_dir)
    tok = load_tokenizer(cfg["tokenizer"]["path"])
    tok.save_pretrained(str(out_dir))
    return tok


def build_data(cfg: dict, out_dir: str | Path, only: str | None = None) -> dict:
    """The tokenizer and every split; `only`: just "tokenizer", or just one split (which reads the
    tokenizer already in `out_dir`), so the workflow reruns only what a config edit touches."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if only not in (None, "tokenizer", *cfg["data"]):
        raise ValueError(f"--only: expected tokenizer or one of {list(cfg['data'])}, got {only!r}")
    if only in (None, "tokenizer"):
        tokenizer = build_tokenizer(cfg, out_dir / "tokenizer")
    else:
        tokenizer = load_tokenizer(out_dir / "tokenizer")
    summary = {}
    for split, spec in cfg["data"].items():
        if spec is None or only not in (None, split):  # e.g. no pretraining split when every model is pretrained
            continue
        if spec["source"] == "generated":
            seed = spec["seed"] + SPLIT_SEED_OFFSET[split]
            docs = generate_documents(corpus_config(cfg, spec["seq_len"], split), spec["num_docs"], seed)
        else:
            docs = load_text_corpus(
                spec["source"],
                tokenizer,
                min_tokens=spec["seq_len"],
                max_docs=spec["num_docs"],
                max_tokens=spec["seq_len"],
            )
        meta = write_token_dataset(docs, tokenizer, spec["seq_len"], out_dir / f"{split}.npy")
        log.info("%s: %d documents, %d tokens", split, meta["num_docs"], meta["tokens"])
        summary[split] = meta
    return summary
