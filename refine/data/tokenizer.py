"""Tokenizers for the embedded default study: a word-level one and a byte-level one, built offline.

Both are saved as Hugging Face tokenizer directories (`tokenizer.json` + `tokenizer_config.json`)
that `transformers.AutoTokenizer.from_pretrained(dir)` loads as a `PreTrainedTokenizerFast` with
pad/unk/bos/eos set. Neither adds special tokens on its own: callers add BOS where they want it.

Word tokenizer (`build_word_tokenizer`). Whitespace is kept inside the tokens, SentencePiece style,
so that decoding gives back the exact text:

- the normalizer prepends one space and writes every space as SPACE ("▁"): "The sky" → "▁The▁sky";
- the pre-tokenizer cuts that into pieces: a letter run, a digit group of at most 3 digits, one
  punctuation/symbol character, each optionally led by "▁"; any other whitespace character
  (newline, tab) alone; a lone "▁" (a space that no word follows);
- each piece is looked up whole ("▁green", "▁482", "."); a piece missing from the vocabulary is
  spelled greedily from the longest known prefix (a WordPiece model whose continuation prefix is
  empty), which ends in single characters: "▁3f2a" → "▁3", "f", "2", "a"; "▁1234567" → "▁123",
  "4", "5", "6", "7";
- the decoder concatenates the tokens, turns "▁" back into spaces and drops the prepended one.

So `decode(encode(s)) == s` for every text whose characters are in the vocabulary (every ASCII
printable character, newline, tab, and every character of the texts the tokenizer was built from),
which covers all generated formats, multi-digit numbers and UUIDs: there is no `normalize_text`,
evaluation compares decoded strings directly. The same word is a different token after a space
("▁is") and glued to what precedes it ("is" after a newline); the generated corpus only emits the
spaced forms.

Deviations from the brief, with reasons:
- only the spaced forms "▁0" … "▁999" are always single tokens; a digit group glued to a previous
  group or symbol ("456" in "1234567") falls back to single digits unless it is a piece of the
  texts. Generated values always follow a space, and 1,000 glued number tokens would nearly double
  the vocabulary, whose LM head dominates the cost of a tiny model.
- the hex digits and letters are glued single-character tokens (a–z, A–Z and 0–9), which is what
  lets UUID-like values and unknown words tokenize without UNK.

Byte tokenizer (`build_byte_tokenizer`): token id b is byte b (0–255), special tokens follow; GPT-2's
byte-to-printable-character map makes the bytes storable in `tokenizer.json`.
"""

from __future__ import annotations

import logging
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

SPACE = "▁"  # U+2581, marks "a space precedes this token"
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
MAX_SPACED_NUMBER = 999
_PIECE_PATTERN = rf"{SPACE}?\p{{L}}+|{SPACE}?\p{{N}}{{1,3}}|{SPACE}?[^\s\p{{L}}\p{{N}}{SPACE}]|\s|{SPACE}"
_FALLBACK_CHARACTERS = tuple(c for c in string.printable if c not in " \r\x0b\x0c")


def render_tokens(pieces: Iterable[str]) -> str:
    """The text that the word tokenizer splits into exactly `pieces` (vocabulary strings).

    The first piece must start with SPACE (the tokenizer prepends one to every text).
    """
    joined = "".join(pieces)
    if not joined.startswith(SPACE):
        raise ValueError(f"render_tokens: the first piece must start with {SPACE!r}, got {joined[:10]!r}")
    return joined[1:].replace(SPACE, " ")


def _word_pipeline(vocab: dict[str, int]) -> Tokenizer:
    tok = Tokenizer(
        models.WordPiece(
            vocab, unk_token=UNK, continuing_subword_prefix="", max_input_chars_per_word=1_000_000
        )
    )
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE_PATTERN), behavior="isolated")
    tok.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tok


def _pieces(tok: Tokenizer, text: str) -> list[str]:
    return [piece for piece, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text))]


def _save(tok: Tokenizer, out_dir: str | Path) -> PreTrainedTokenizerFast:
    # transformers is imported where used: it takes seconds, and the corpus generator needs none of it
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    logger.info("saved a tokenizer of %d tokens to %s", tok.get_vocab_size(), out)
    return load_tokenizer(out)  # reloaded, so that `name_or_path` names the directory


def build_word_tokenizer(
    texts: Iterable[str], out_dir: str | Path, extra_tokens: Iterable[str] = (), min_freq: int = 1
) -> PreTrainedTokenizerFast:
    """Build the word tokenizer from `texts`, save it to `out_dir` and return it.

    The vocabulary, in this order: the 4 special tokens, SPACE, the fallback characters (ASCII
    printable, newline, tab), "▁0" … "▁999", every other character of `texts`, then every piece of
    `texts` seen at least `min_freq` times, by falling count then alphabetically (deterministic).
    `extra_tokens` are texts whose pieces all enter the vocabulary whatever their count.
    """
    if min_freq < 1:
        raise ValueError(f"build_word_tokenizer: min_freq must be >= 1, got {min_freq}")
    splitter = _word_pipeline({t: i for i, t in enumerate(SPECIAL_TOKENS)})
    counts: Counter[str] = Counter()
    characters: set[str] = set()
    for text in texts:
        characters.update(text)
        counts.update(_pieces(splitter, text))
    forced = [piece for text in extra_tokens for piece in _pieces(splitter, text)]

    vocab: dict[str, int] = {}
    fixed = [*SPECIAL_TOKENS, SPACE, *_FALLBACK_CHARACTERS]
    fixed += [f"{SPACE}{n}" for n in range(MAX_SPACED_NUMBER + 1)]
    fixed += sorted(characters - {" "})
    frequent = sorted((p for p, n in counts.items() if n >= min_freq), key=lambda p: (-counts[p], p))
    for token in [*fixed, *forced, *frequent]:
        vocab.setdefault(token, len(vocab))
    return _save(_word_pipeline(vocab), out_dir)


def _bytes_to_printable() -> dict[int, str]:
    """GPT-2's reversible map of the 256 bytes to printable unicode characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    return mapping


def build_byte_tokenizer(out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Build the byte tokenizer (id b = byte b, then the 4 special tokens), save it and return it."""
    vocab = {char: b for b, char in _bytes_to_printable().items()}
    for special in SPECIAL_TOKENS:
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, merges=[], unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return _save(tok, out_dir)


def load_tokenizer(path_or_name: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer directory (or a hub name, where the hub is reachable) with AutoTokenizer."""
    path = Path(path_or_name)
    if path.is_absolute() and not path.exists():
        raise FileNotFoundError(f"load_tokenizer: no tokenizer directory at {path}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path_or_name))


def continuation_ids(tokenizer, prompt: str, answer: str) -> list[int]:
    """The token ids `answer` gets when it follows `prompt` (after one space), as in running text.

    Tokenising the answer alone can differ from its tokens in context (a leading space becomes
    its own token in SentencePiece-style vocabularies, BPE merges differ at the boundary), so the
    pair is tokenised together and the prompt's ids are cut off; where the prompt's ids are not a
    prefix of the pair's (a merge across the boundary), the answer is tokenised alone.
    """
    answer = answer.strip()
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    joint = tokenizer.encode(prompt + " " + answer, add_special_tokens=False)
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids) :]
    return tokenizer.encode(answer, add_special_tokens=False)
