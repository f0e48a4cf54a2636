"""Generated training documents for the embedded default study (tiny models pretrained here).

FEASIBILITY.md measured what a tiny DeltaNet learns on a CPU: retrieval appears within a few
thousand steps only with single-token keys and values, dense facts and short documents. So every
document is built as a list of word-tokenizer pieces (see `refine.data.tokenizer`) and rendered
with `render_tokens`: the generator knows the exact token count, and every document has exactly
`doc_tokens` tokens under the word tokenizer built from `vocabulary_texts(cfg)` (under any other
tokenizer the count differs). Keys are single-token words from KEY_WORDS, values integers in
[value_min, value_max] ⊆ [0, 999], single tokens too. Document kinds, drawn by `kind_weights`:

- `recall`: RULER's noise-sentence haystack (ending with a whole sentence), n facts "KEY is VAL."
  at random sentence boundaries, then the queries "KEY? VAL." for every fact in random order
  (FEASIBILITY's dense format);
- `kvlist`: associative recall: "KEY VAL, KEY VAL, … KEY VAL." then noise filler, then every key
  queried as in `recall`, in random order;
- `repeat`: prose with a span of random keys and values that is copied later (induction);
- `prose`: varied template sentences (text with no task in it);
- `niah`: a short RULER NIAH prompt in RULER's exact wording (`refine.data.ruler`: instruction,
  "One of the special magic numbers for KEY is: VAL." needles in the noise-paragraph or
  distractor-needle haystack, the question and the answer prefix) followed by its answer
  " VAL1, VAL2." and a newline; the variant is drawn from `niah_variants`, keys from the key pool,
  values of `niah_value_digits` digits; as many haystack units as fit, noise sentences after the
  answer fill the rest. The answer lists the gold values in the order their needles appear in the
  context (RULER scores with `string_match_all`, which ignores order; a fixed order is learnable).
- `qa`: a synthetic RULER-QA item (`refine.data.ruler_qa`: the authors' prompt around numbered
  passages of `synthetic_qa_corpus`, RULER's gold-then-distractor selection, as many passages as
  fit) followed by its answer " VAL" and a newline, noise sentences after it;
- `qa_dense`: dense QA: a newline, then numbered passages of the `qa` kind's synthetic corpus in RULER's
  "Document N:" format (no instructions), then the question of every passage with its answer
  ("Question: …\nAnswer: VAL", as the QA prompts end), in random order; as many passages as fit;
- `longbench`: a synthetic LongBench-format item (`refine.data.synthetic_longbench`, one of
  `longbench_tasks`, the official prompt template of the task), cut in the middle as the evaluation
  cuts a long prompt when it does not fit, followed by its first gold answer and a newline.
  Deviations: answers follow the prompt after a space (" 482", the spaced single tokens the
  models emit); an answer is capped at half the row; the cut keeps the first and last halves of
  the prompt's pieces (the evaluation's `truncate_middle` on token ids, the same for whole tokens).

Two options serve a curriculum towards the evaluation formats (docs/default_study.md, session 7):
`answer_prefixes` puts text such as "\nAnswer:" between a dense query "KEY?" and its answer (drawn
per query; the default `[""]` leaves the documents as they were), and `qa_questions` makes a `qa`
document answer follow-up questions about other passages of its prompt after the item's own.

The `qa`, `qa_dense` and `longbench` kinds teach the formats of the evaluation suites with the evaluation's own
generators, but every item draws its passages, questions and values from a seed of its own
(`task_seed`: "corpus-<kind>:<62 random bits>" of the document's stream); the evaluation suites use
integer seeds (`refine.eval.data`), so no evaluation item is a training document
(tests/test_eval_disjoint.py checks it on built data).

`segment_tokens` keeps the dense kinds dense at long `doc_tokens`: a `recall`, `kvlist`, `repeat`
or `prose` row is then a run of independent sub-documents of `segment_tokens` tokens (the last
takes the remainder), so a pretraining split of long rows can mix RULER-format `niah` documents with
the short dense documents that make retrieval form (FEASIBILITY.md) without padding.

Deviations: in the dense kinds, RULER's needle and query are the dense forms that FEASIBILITY found
a tiny model can learn ("KEY is VAL." / "KEY? VAL."); the `niah` kind keeps RULER's wording but only
for the variants whose keys are words and values numbers (UUIDs are not single tokens).

Each document draws from its own `random.Random` seeded with a string built from (seed, index):
documents do not depend on PYTHONHASHSEED, and the first k of n documents are the k documents
generated alone.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tokenizers import Regex, pre_tokenizers

from refine.data.longbench_spec import DATASET_TO_PROMPT, PAPER_TASKS, TREC_CLASSES
from refine.data.ruler import NIAH_VARIANTS, NiahSampler, make_niah_sampler
from refine.data.ruler_qa import (
    DOCUMENT_PROMPT,
    DOCUMENT_SEPARATOR,
    QA_TEMPLATES,
    format_qa_prompt,
    pick_documents,
    synthetic_qa_corpus,
)
from refine.data.synthetic_longbench import MIN_POOL_SIZE, synthetic_record, trec_cues
from refine.data.tokenizer import _PIECE_PATTERN, MAX_SPACED_NUMBER, SPACE, render_tokens

logger = logging.getLogger(__name__)

# RULER's noise haystack; source: NVIDIA/RULER scripts/data/synthetic/niah.py.
NOISE_SENTENCES = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

KEY_WORDS = tuple(
    """
apple river garden window pencil candle mirror bottle basket ladder button carpet castle cloud coffee
copper cotton desert dragon engine falcon feather forest fossil gate guitar hammer harbor helmet island
jacket jungle kettle kitten lantern lemon lizard magnet marble meadow melon monkey needle ocean orange
oyster palace panther parrot pepper piano pillow planet pocket pumpkin puzzle rabbit radio ribbon rocket
saddle salmon shadow silver spider sponge statue summer sweater tablet temple thunder ticket tiger tomato
tunnel turtle valley velvet violin wagon walnut whistle winter wizard anchor arrow badge banana barrel
beacon blanket bridge cactus camera canyon carrot cherry circle compass cookie crystal diamond dolphin
eagle fabric galaxy giraffe hazel hollow igloo jewel kernel lobster maple napkin nickel noodle orchid
pebble puppet quartz raven rubber scarf shovel squirrel tulip umbrella vessel walrus zebra yogurt
""".split()
)

_PROSE_WORDS = {
    "ADJ": "old young quiet small large bright tired happy careful strange busy gentle heavy distant "
    "clever simple",
    "NOUN": "farmer teacher child doctor sailor baker student neighbor friend painter soldier driver singer "
    "writer hunter merchant road house town school market field boat door book song story table "
    "chair village",
    "VERB": "saw found carried painted visited watched opened built followed remembered cleaned borrowed "
    "described ignored admired moved",
    "PREP": "near behind under beside across inside toward past",
    "TIME": "today yesterday slowly quickly twice early late often",
}
_PROSE_TEMPLATES = (
    "The ADJ NOUN VERB the NOUN.",
    "A NOUN VERB the ADJ NOUN PREP the NOUN.",
    "The NOUN VERB a NOUN TIME.",
    "The NOUN and the NOUN VERB the ADJ NOUN.",
    "The ADJ NOUN VERB PREP the NOUN TIME.",
)
KINDS = ("recall", "kvlist", "repeat", "prose", "niah", "qa", "longbench", "qa_dense")
DENSE_KINDS = KINDS[:4]
_QA_TOKENS = 8  # a fact "KEY is VAL." and its query "KEY? VAL." take 4 tokens each
# RULER variants whose keys are words and values numbers: single tokens with a closed key pool
NIAH_DOC_VARIANTS = tuple(
    name for name, spec in NIAH_VARIANTS.items() if (spec.key_type, spec.value_type) == ("words", "numbers")
)
_PRE_TOKENIZER = pre_tokenizers.Split(Regex(_PIECE_PATTERN), behavior="isolated")


def _default_weights() -> dict[str, float]:
    return {"recall": 0.6, "kvlist": 0.25, "repeat": 0.1, "prose": 0.05}


@dataclass
class CorpusConfig:
    """What the generated documents look like; lengths in word-tokenizer tokens."""

    doc_tokens: int = 32
    kind_weights: dict[str, float] = field(default_factory=_default_weights)
    num_keys: int = len(KEY_WORDS)  # the key pool is KEY_WORDS[:num_keys]
    value_min: int = 0
    value_max: int = MAX_SPACED_NUMBER
    min_facts: int = 1  # facts per `recall` document
    max_facts: int = 8
    fact_fraction: float = 0.5  # at most this share of a `recall` document is facts and queries
    max_kv_pairs: int = 16  # pairs per `kvlist` document (fewer where they don't fit)
    # text between a dense query "KEY?" and its answer, drawn per query ("" : "KEY? VAL."; "\nAnswer:":
    # "KEY?\nAnswer: VAL.", the answer prefix of the QA and LongBench prompts, so the lookup learns to
    # carry the key past it)
    answer_prefixes: tuple[str, ...] = ("",)
    min_span: int = 4  # length of the copied span of a `repeat` document
    max_span: int = 12
    segment_tokens: int | None = None  # dense kinds: sub-documents of this many tokens per row
    niah_variants: tuple[str, ...] = NIAH_DOC_VARIANTS  # drawn uniformly for a `niah` document
    niah_value_digits: int = 3  # digits of `niah` values (<= 3: single tokens)
    qa_passages: int = 64  # passages of the synthetic QA corpus that a `qa` item is drawn from
    qa_facts: int = 3  # facts per passage
    qa_questions: int = 1  # questions answered per `qa` document: the item's, then follow-ups on its passages
    longbench_tasks: tuple[str, ...] = PAPER_TASKS  # drawn uniformly for a `longbench` document
    longbench_context_words: int = 200  # as eval.longbench.context_words

    def __post_init__(self):
        unknown = sorted(set(self.kind_weights) - set(KINDS))
        if unknown:
            raise ValueError(
                f"corpus.kind_weights: unknown kinds {unknown}, expected a subset of {list(KINDS)}"
            )
        if any(w < 0 for w in self.kind_weights.values()) or sum(self.kind_weights.values()) <= 0:
            raise ValueError(f"corpus.kind_weights must be >= 0 with a positive sum, got {self.kind_weights}")
        if not 1 <= self.num_keys <= len(KEY_WORDS):
            raise ValueError(f"corpus.num_keys must be in [1, {len(KEY_WORDS)}], got {self.num_keys}")
        if not 0 <= self.value_min <= self.value_max <= MAX_SPACED_NUMBER:
            raise ValueError(
                f"corpus.value_min/value_max must satisfy 0 <= value_min <= value_max <= "
                f"{MAX_SPACED_NUMBER} (single-token values), "
                f"got {self.value_min}/{self.value_max}"
            )
        if not 1 <= self.min_facts <= self.max_facts:
            raise ValueError(
                f"corpus.min_facts/max_facts must satisfy 1 <= min_facts <= max_facts, "
                f"got {self.min_facts}/{self.max_facts}"
            )
        if not 0 < self.fact_fraction <= 1:
            raise ValueError(f"corpus.fact_fraction must be in (0, 1], got {self.fact_fraction}")
        self.answer_prefixes = tuple(self.answer_prefixes)
        if not self.answer_prefixes or not all(isinstance(a, str) and a == a.rstrip(" ") for a in self.answer_prefixes):
            raise ValueError(f"corpus.answer_prefixes must be a non-empty list of strings without trailing "
                             f"spaces, got {list(self.answer_prefixes)}")  # fmt: skip
        if self.max_kv_pairs < 1:
            raise ValueError(f"corpus.max_kv_pairs must be >= 1, got {self.max_kv_pairs}")
        if not 1 <= self.min_span <= self.max_span:
            raise ValueError(
                f"corpus.min_span/max_span must satisfy 1 <= min_span <= max_span, "
                f"got {self.min_span}/{self.max_span}"
            )
        if self.min_facts > self.num_keys:
            raise ValueError(
                f"corpus.min_facts={self.min_facts} needs as many distinct keys, but num_keys={self.num_keys}"
            )
        self._check_dense_length(self.doc_tokens if self.segment_tokens is None else self.segment_tokens)
        if self.segment_tokens is not None and self.segment_tokens > self.doc_tokens:
            raise ValueError(
                f"corpus.segment_tokens={self.segment_tokens} exceeds doc_tokens={self.doc_tokens}"
            )
        self.niah_variants = tuple(self.niah_variants)
        bad = [v for v in self.niah_variants if v not in NIAH_DOC_VARIANTS]
        if bad or not self.niah_variants:
            raise ValueError(
                f"corpus.niah_variants: {bad or 'empty'}; expected a non-empty subset of "
                f"{list(NIAH_DOC_VARIANTS)} (variants with word keys and number values)"
            )
        self.longbench_tasks = tuple(self.longbench_tasks)
        bad = [t for t in self.longbench_tasks if t not in PAPER_TASKS]
        if bad or not self.longbench_tasks:
            raise ValueError(f"corpus.longbench_tasks: {bad or 'empty'}; expected a non-empty subset of "
                             f"{list(PAPER_TASKS)}")  # fmt: skip
        if self.qa_questions < 1:
            raise ValueError(f"corpus.qa_questions must be >= 1, got {self.qa_questions}")
        if self.qa_passages < 2 or not 1 <= self.qa_facts <= self.num_keys:
            raise ValueError(f"corpus.qa_passages must be >= 2 and qa_facts in [1, num_keys], "
                             f"got {self.qa_passages}/{self.qa_facts}")  # fmt: skip
        if self.kind_weights.get("longbench", 0) > 0 and self.num_keys < MIN_POOL_SIZE:
            raise ValueError(f"corpus: the `longbench` kind needs num_keys >= {MIN_POOL_SIZE}, got {self.num_keys}")
        if self.longbench_context_words < 50:
            raise ValueError(f"corpus.longbench_context_words must be >= 50, got {self.longbench_context_words}")
        if not 1 <= self.niah_value_digits <= 3:
            raise ValueError(f"corpus.niah_value_digits must be in [1, 3], got {self.niah_value_digits}")
        if self.kind_weights.get("niah", 0) > 0:
            need = max(niah_min_tokens(self, v) for v in self.niah_variants)
            if self.doc_tokens < need:
                raise ValueError(
                    f"corpus.doc_tokens={self.doc_tokens} is too short for the `niah` kind: "
                    f"niah_variants {list(self.niah_variants)} need {need} tokens"
                )

    def _check_dense_length(self, tokens: int) -> None:
        too_few_facts = self.min_facts * (_QA_TOKENS + _prefix_tokens(self)) > self.fact_fraction * tokens
        if tokens < max(16, 3 * self.min_span) or too_few_facts:
            what = "doc_tokens" if self.segment_tokens is None else "segment_tokens"
            raise ValueError(
                f"corpus.{what}={tokens} is too short: it must be >= 16, >= 3 * min_span "
                f"({3 * self.min_span}) and leave min_facts={self.min_facts} facts with their queries "
                f"({_QA_TOKENS} tokens each) within fact_fraction={self.fact_fraction} of the document"
            )

    @property
    def keys(self) -> tuple[str, ...]:
        """The key pool: single-token words."""
        return KEY_WORDS[: self.num_keys]

    @property
    def values(self) -> range:
        """The value range: integers that are single tokens."""
        return range(self.value_min, self.value_max + 1)


def format_fact(key: str, value: int) -> str:
    """The text of a fact, as documents state it."""
    return f"{key} is {value}."


def format_query(key: str) -> str:
    """The text of a query up to its answer; the answer follows as " VALUE."."""
    return f"{key}?"


def _pieces_of(text: str) -> list[str]:
    """Word-tokenizer pieces of simple text: words separated by single spaces, closing punctuation."""
    pieces = []
    for word in text.split(" "):
        stem = word.rstrip(".,?")
        pieces.append(SPACE + stem)
        pieces.extend(word[len(stem) :])
    return pieces


_NOISE = [_pieces_of(s + ".") for s in NOISE_SENTENCES[:-1].split(". ")]


def _fact(key: str, value: int) -> list[str]:
    return _pieces_of(format_fact(key, value))


def _query(key: str, value: int, prefix: str = "") -> list[str]:
    if not prefix:
        return _pieces_of(f"{format_query(key)} {value}.")
    return text_pieces(f"{format_query(key)}{prefix} {value}.")


def _prefix_tokens(cfg: CorpusConfig) -> int:
    """The most tokens an answer prefix adds to a query."""
    return max(len(_query("a", 0, prefix)) - 4 for prefix in cfg.answer_prefixes)


def _noise(rng: random.Random, n: int) -> list[str]:
    """`n` tokens of noise sentences that end with a whole sentence, cycling from a random one.

    The tokens that whole sentences leave over begin the filler as the head of a sentence (a
    head, unlike a tail, never starts with the glued ".").
    """
    index = rng.randrange(len(_NOISE))
    sentences: list[list[str]] = []
    while sum(map(len, sentences)) + len(_NOISE[index % len(_NOISE)]) <= n:
        sentences.append(_NOISE[index % len(_NOISE)])
        index += 1
    head = _NOISE[(index + len(_NOISE) - 1 - len(sentences)) % len(_NOISE)][: n - sum(map(len, sentences))]
    return head + [p for sentence in sentences for p in sentence]


def _prose_sentence(rng: random.Random) -> list[str]:
    words = [
        rng.choice(_PROSE_WORDS[w].split()) if w in _PROSE_WORDS else w
        for w in rng.choice(_PROSE_TEMPLATES)[:-1].split(" ")
    ]
    return _pieces_of(" ".join(words) + ".")


def _prose(rng: random.Random, n: int) -> list[str]:
    pieces: list[str] = []
    while len(pieces) < n:
        pieces += _prose_sentence(rng)
    return pieces[:n]


def _prefixes(cfg: CorpusConfig, rng: random.Random, n: int) -> list[str]:
    """The answer prefix of each of `n` queries (no draw with a single prefix: documents stay as they were)."""
    if len(cfg.answer_prefixes) == 1:
        return [cfg.answer_prefixes[0]] * n
    return [rng.choice(cfg.answer_prefixes) for _ in range(n)]


def _queries(items: list[tuple[str, int]], prefixes: list[str], rng: random.Random) -> list[str]:
    """The queries of `items` (each with its prefix) in random order."""
    order = rng.sample(range(len(items)), len(items))
    return [p for i in order for p in _query(*items[i], prefixes[i])]


def _query_tokens(prefixes: list[str]) -> int:
    return sum(len(_query("a", 0, prefix)) for prefix in prefixes)


def _recall(cfg: CorpusConfig, rng: random.Random) -> list[str]:
    per_fact = _QA_TOKENS + _prefix_tokens(cfg)  # a fact and its query, with the longest prefix
    most = min(cfg.max_facts, cfg.num_keys, int(cfg.fact_fraction * cfg.doc_tokens) // per_fact)
    n = rng.randint(cfg.min_facts, most)
    facts = [(key, rng.choice(cfg.values)) for key in rng.sample(cfg.keys, n)]
    prefixes = _prefixes(cfg, rng, n)
    filler = _noise(rng, cfg.doc_tokens - n * (_QA_TOKENS // 2) - _query_tokens(prefixes))
    boundaries = sorted({0} | {i + 1 for i, p in enumerate(filler) if p == "."})
    depths = sorted(rng.choice(boundaries) for _ in facts)
    pieces, last = [], 0
    for depth, (key, value) in zip(depths, facts, strict=True):
        pieces += filler[last:depth] + _fact(key, value)
        last = depth
    return pieces + filler[last:] + _queries(facts, prefixes, rng)


def _kvlist(cfg: CorpusConfig, rng: random.Random) -> list[str]:
    # a pair takes 3 tokens, its query 4 and the longest prefix
    n = min(cfg.max_kv_pairs, cfg.num_keys, cfg.doc_tokens // (7 + _prefix_tokens(cfg)))
    pairs = [(key, rng.choice(cfg.values)) for key in rng.sample(cfg.keys, n)]
    prefixes = _prefixes(cfg, rng, n)
    pieces = []
    for i, (key, value) in enumerate(pairs):
        pieces += [SPACE + key, f"{SPACE}{value}", "." if i == n - 1 else ","]
    pieces += _noise(rng, cfg.doc_tokens - 3 * n - _query_tokens(prefixes))
    return pieces + _queries(pairs, prefixes, rng)


def _repeat(cfg: CorpusConfig, rng: random.Random) -> list[str]:
    length = rng.randint(cfg.min_span, min(cfg.max_span, cfg.doc_tokens // 3))  # >= min_span: validated
    choices = [SPACE + k for k in cfg.keys] + [f"{SPACE}{v}" for v in cfg.values]
    span = [rng.choice(choices) for _ in range(length)]
    filler = _prose(rng, cfg.doc_tokens - 2 * length)
    first = rng.randint(0, len(filler))
    second = rng.randint(first, len(filler))
    return filler[:first] + span + filler[first:second] + span + filler[second:]


def _plain_prose(cfg: CorpusConfig, rng: random.Random) -> list[str]:
    return _prose(rng, cfg.doc_tokens)


def text_pieces(text: str) -> list[str]:
    """The word tokenizer's pieces of `text` (its normalizer and pre-tokenizer, no vocabulary).

    Each piece is one token when it is in the vocabulary, which holds for every text the
    generators emit (`vocabulary_texts` contains them all).
    """
    return [p for p, _ in _PRE_TOKENIZER.pre_tokenize_str(SPACE + text.replace(" ", SPACE))]


def _niah_sampler(cfg: CorpusConfig, variant: str, seed: int) -> NiahSampler:
    return make_niah_sampler(variant, seed, key_pool=list(cfg.keys), value_digits=cfg.niah_value_digits)


def _niah_pieces(sampler: NiahSampler, n_units: int) -> list[str]:
    """Pieces of the prompt with `n_units` haystack units, its answer in context order and a newline."""
    prompt, outputs, _, _ = sampler.render(0, n_units)
    ordered = sorted(outputs, key=lambda v: prompt.index(f" is: {v}."))
    answer = [p for i, v in enumerate(ordered) for p in (f"{SPACE}{v}", "," if i < len(ordered) - 1 else ".")]
    return text_pieces(prompt) + answer + ["\n"]


def niah_min_tokens(cfg: CorpusConfig, variant: str) -> int:
    """Tokens of the shortest `niah` document of `variant` (its fewest haystack units)."""
    sampler = _niah_sampler(cfg, variant, 0)
    return len(_niah_pieces(sampler, sampler.min_units))


def _niah(cfg: CorpusConfig, rng: random.Random) -> list[str]:
    sampler = _niah_sampler(cfg, rng.choice(cfg.niah_variants), rng.getrandbits(62))
    smallest = sampler.min_units
    base = len(_niah_pieces(sampler, smallest))
    per_unit = len(_niah_pieces(sampler, smallest + 1)) - base  # haystack units are alike in length
    pieces = _niah_pieces(sampler, smallest + (cfg.doc_tokens - base) // per_unit)
    return pieces + _noise(rng, cfg.doc_tokens - len(pieces))


def task_seed(kind: str, rng: random.Random) -> str:
    """The seed of the evaluation-format generator for one `qa` / `longbench` document: a string,
    never one of the evaluation suites' integer seeds (tests monkeypatch it to prove they would leak)."""
    return f"corpus-{kind}:{rng.getrandbits(62)}"


def _answered(prompt: list[str], answer: list[str], cfg: CorpusConfig, rng: random.Random, what: str) -> list[str]:
    """`prompt`, cut in the middle to leave room, + `answer` + newline, then noise to `doc_tokens`."""
    answer = answer[: cfg.doc_tokens // 2] + ["\n"]
    room = cfg.doc_tokens - len(answer)
    if room < 2:
        raise ValueError(f"corpus.doc_tokens={cfg.doc_tokens} is too short for a `{what}` document")
    if len(prompt) > room:  # refine.eval.longbench.truncate_middle: first and last halves
        prompt = prompt[: room // 2] + prompt[len(prompt) - room // 2 :]
    pieces = prompt + answer
    return pieces + _noise(rng, cfg.doc_tokens - len(pieces))


def _answered_question(query: str, answer: str) -> list[str]:
    """The pieces of "\nQuestion: QUERY\nAnswer: VAL", from its newline on (it follows a whole line)."""
    return text_pieces(f"\nQuestion: {query}\nAnswer: {answer}")[1:]


def _most_passages(pieces: Callable[[int], list[str]], most: int, cfg: CorpusConfig, rng: random.Random,
                   what: str) -> list[str]:  # fmt: skip
    """`pieces(n)` for the largest n <= `most` that fits `doc_tokens` (RULER's budget search), then noise."""
    best = pieces(1)
    if len(best) > cfg.doc_tokens:
        raise ValueError(f"corpus.doc_tokens={cfg.doc_tokens} cannot hold a `{what}` document with one passage "
                         f"({len(best)} tokens)")  # fmt: skip
    for n in range(2, most + 1):
        longer = pieces(n)
        if len(longer) > cfg.doc_tokens:
            break
        best = longer
    return best + _noise(rng, cfg.doc_tokens - len(best))


def _qa(cfg: CorpusConfig, rng: random.Random) -> list[str]:
    corpus = synthetic_qa_corpus(list(cfg.keys), cfg.qa_passages, task_seed("qa", rng), cfg.qa_facts)
    index = rng.randrange(len(corpus.questions))
    question = corpus.questions[index]
    answer = text_pieces(question.outputs[0])
    picks, order = rng.getrandbits(62), rng.getrandbits(62)

    def pieces(n: int) -> list[str]:
        """The item's prompt with `n` passages, its answer, and up to qa_questions - 1 follow-ups on other
        passages of the prompt, each line ending in a newline."""
        docs = pick_documents(corpus, question, n, random.Random(picks))
        out = text_pieces(format_qa_prompt(docs, question.query)) + answer
        others = [q for i, q in enumerate(corpus.questions) if i != index and corpus.docs[q.gold[0]] in docs]
        for follow in random.Random(order).sample(others, min(len(others), cfg.qa_questions - 1)):
            out += _answered_question(follow.query, follow.outputs[0])
        return out + ["\n"]

    return _most_passages(pieces, len(corpus.docs), cfg, rng, "qa")


def _qa_dense(cfg: CorpusConfig, rng: random.Random) -> list[str]:
    """Dense QA: a newline, numbered synthetic QA passages (the `qa` kind's corpus and "Document N:" format,
    no instructions), then every passage's question answered ("Question: …\nAnswer: VAL"), in random order."""
    corpus = synthetic_qa_corpus(list(cfg.keys), cfg.qa_passages, task_seed("qa_dense", rng), cfg.qa_facts)
    chosen = rng.sample(range(len(corpus.docs)), len(corpus.docs))
    order = rng.getrandbits(62)

    def pieces(n: int) -> list[str]:
        context = DOCUMENT_SEPARATOR.join(DOCUMENT_PROMPT.format(i=j + 1, document=corpus.docs[d])
                                          for j, d in enumerate(chosen[:n]))  # fmt: skip
        out = text_pieces("\n" + context + "\n")  # a newline first: "Document" as after a newline
        for d in random.Random(order).sample(chosen[:n], n):
            out += _answered_question(corpus.questions[d].query, corpus.questions[d].outputs[0])
        return out + ["\n"]

    return _most_passages(pieces, len(corpus.docs), cfg, rng, "qa_dense")


def _longbench(cfg: CorpusConfig, rng: random.Random) -> list[str]:
    task = rng.choice(cfg.longbench_tasks)
    seed = task_seed("longbench", rng)
    record = synthetic_record(cfg.keys, task, 0, cfg.longbench_context_words, seed, trec_cues(cfg.keys, seed))
    prompt = text_pieces(DATASET_TO_PROMPT[task].format(context=record["context"], input=record["input"]))
    return _answered(prompt, text_pieces(record["answers"][0]), cfg, rng, "longbench")


def _segmented(generate: Callable[[CorpusConfig, random.Random], list[str]]):
    """`generate` for rows of `segment_tokens`-token sub-documents (the last takes the remainder)."""

    def rows(cfg: CorpusConfig, rng: random.Random) -> list[str]:
        if cfg.segment_tokens is None or cfg.segment_tokens == cfg.doc_tokens:
            return generate(cfg, rng)
        count = cfg.doc_tokens // cfg.segment_tokens
        sizes = [cfg.segment_tokens] * (count - 1) + [cfg.doc_tokens - (count - 1) * cfg.segment_tokens]
        # a sub-document is generated like a row of `size` tokens; no `niah` weight: nothing to check
        segment = {size: replace(cfg, doc_tokens=size, segment_tokens=None, kind_weights={"recall": 1})
                   for size in set(sizes)}  # fmt: skip
        return [p for size in sizes for p in generate(segment[size], rng)]

    return rows


_GENERATORS: dict[str, Callable[[CorpusConfig, random.Random], list[str]]] = {
    "recall": _segmented(_recall),
    "kvlist": _segmented(_kvlist),
    "repeat": _segmented(_repeat),
    "prose": _segmented(_plain_prose),
    "niah": _niah,
    "qa": _qa,
    "longbench": _longbench,
    "qa_dense": _qa_dense,
}


def generate_pieces(cfg: CorpusConfig, n_docs: int, seed: int) -> list[tuple[str, list[str]]]:
    """(kind, word-tokenizer pieces) of `n_docs` documents; each has exactly `cfg.doc_tokens` pieces."""
    if n_docs < 0:
        raise ValueError(f"generate_pieces: n_docs must be >= 0, got {n_docs}")
    kinds = [k for k in KINDS if cfg.kind_weights.get(k, 0) > 0]
    weights = [cfg.kind_weights[k] for k in kinds]
    docs = []
    for index in range(n_docs):
        rng = random.Random(f"refine.corpus:{seed}:{index}")
        kind = rng.choices(kinds, weights)[0]
        pieces = _GENERATORS[kind](cfg, rng)
        if len(pieces) != cfg.doc_tokens:
            raise AssertionError(f"{kind} document {index} has {len(pieces)} tokens, not {cfg.doc_tokens}")
        docs.append((kind, pieces))
    return docs


def generate_documents(cfg: CorpusConfig, n_docs: int, seed: int) -> list[str]:
    """`n_docs` documents of exactly `cfg.doc_tokens` word-tokenizer tokens, deterministic in `seed`."""
    docs = [render_tokens(pieces) for _, pieces in generate_pieces(cfg, n_docs, seed)]
    logger.info("generated %d documents of %d tokens (seed %d)", n_docs, cfg.doc_tokens, seed)
    return docs


def vocabulary_texts(cfg: CorpusConfig) -> list[str]:
    """Texts that contain every token the generators can emit, to build the word tokenizer from."""
    texts = [NOISE_SENTENCES, " ".join(KEY_WORDS), " ".join(str(v) for v in cfg.values)]
    texts += [" ".join(words.split()) for words in _PROSE_WORDS.values()]
    fixed_words = {w for t in _PROSE_TEMPLATES for w in t[:-1].split() if w not in _PROSE_WORDS}
    texts.append(" ".join(sorted(fixed_words)))
    texts += [format_fact(KEY_WORDS[0], 0), f"{format_query(KEY_WORDS[0])} 0.", f"{KEY_WORDS[0]} 0, 0."]
    for variant in NIAH_DOC_VARIANTS:  # RULER's template words, singular and plural, and answers
        sampler = _niah_sampler(cfg, variant, 0)
        texts.append(render_tokens(_niah_pieces(sampler, sampler.min_units)))
    if any(cfg.kind_weights.get(kind, 0) > 0 for kind in ("qa", "longbench", "qa_dense")):
        texts += _task_vocabulary(cfg)  # only then: the default vocabulary (and its token ids) stays as it was
    return texts


def _task_vocabulary(cfg: CorpusConfig) -> list[str]:
    """The pieces of the `qa` and `longbench` formats: templates, key words glued to a newline, spaced
    punctuation, glued numbers (passage numbers), trec labels, and a sample item of every task."""
    texts = list(QA_TEMPLATES.values()) + [DATASET_TO_PROMPT[t] for t in PAPER_TASKS] + list(TREC_CLASSES)
    texts += ["\n" + "\n".join(KEY_WORDS), " ".join(".,?()=+/#:;-*"), "\n" + "\n".join(map(str, range(1000)))]
    texts += ["\n".join(TREC_CLASSES), "What is the of The"]
    corpus = synthetic_qa_corpus(list(cfg.keys), cfg.qa_passages, "vocabulary", cfg.qa_facts)
    texts.append(format_qa_prompt(corpus.docs[:4], corpus.questions[0].query))
    for task in PAPER_TASKS if cfg.num_keys >= MIN_POOL_SIZE else ():
        record = synthetic_record(cfg.keys, task, 0, 50, "vocabulary", trec_cues(cfg.keys, "vocabulary"))
        texts.append(DATASET_TO_PROMPT[task].format(context=record["context"], input=record["input"]))
    return texts
