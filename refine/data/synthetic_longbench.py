"""An offline, synthetic LongBench v1 suite in the official raw JSONL schema.

The default configuration cannot download LongBench, so this module writes a small stand-in for
the 12 English tasks REFINE reports: one `<task>.jsonl` per task with the official raw fields
(`input, context, answers, length, dataset, language, all_classes, _id`) plus `source:
"synthetic"`, so that `refine.eval.longbench.read_raw_jsonl` applies the official prompt templates
and the official metrics score it, and reports can name it a synthetic suite.

Texts are built only from the caller's `word_pool`, the numbers 0-999 and punctuation marks, each a
whitespace-separated token, so a closed word-level vocabulary covers them. The one exception is
trec, whose answers and `all_classes` are the official label names (`TREC_CLASSES`): a word-level
vocabulary must add their words, as it must add the words of the official prompt templates.

Each task keeps the shape of the real one and has a single right answer that the context determines:

- narrativeqa, qasper, multifieldqa_en: filler sentences with one "subject relation value ." fact
  and distractor facts; the input asks "subject relation ?"; the answer is the value.
- hotpotqa, 2wikimqa: numbered passages; a bridge fact "A r1 B ." in one passage and "B r2 value ."
  in another; the input asks "A r1 r2 ?".
- triviaqa, trec, samsum: few-shot examples separated as in the official data, the input is a new
  example without its answer. trec questions carry a cue word tied to their label within a suite;
  a samsum summary is the first speaker followed by the words of their first turn.
- qmsum: a transcript of "speaker : sentence" turns; the query is the topic word that opens one
  turn; the answer is that turn. multi_news: passages that each open with a headline sentence;
  the summary is the headlines in order.
- lcc, repobench-p: code-like lines ending in a run of calls with increasing arguments; the answer
  is the next call. repobench-p puts cross-file snippets with "# path" headers in `context` and the
  in-file code in `input`.

`context_words` is a lower bound on the whitespace tokens of context + input (repobench-p splits
them 3:1 between cross-file and in-file code). `length` counts whitespace tokens of input, context
and answers, as the official field counts words. Records are deterministic given (seed, task,
index).
"""

import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from refine.data.longbench_spec import PAPER_TASKS, TREC_CLASSES

logger = logging.getLogger(__name__)

MIN_POOL_SIZE = 64  # trec ties one distinct cue word to each of its 50 labels
MIN_CONTEXT_WORDS = 50


class _Writer:
    """Random text from the word pool for one record."""

    def __init__(self, pool: Sequence[str], rng: random.Random):
        self.pool, self.rng = pool, rng

    def words(self, low: int, high: int) -> list[str]:
        return self.rng.choices(self.pool, k=self.rng.randint(low, high))

    def number(self) -> str:
        return str(self.rng.randrange(1000))

    def sentence(self) -> str:
        return " ".join(self.words(4, 10)) + " ."

    def fact(self) -> tuple[str, str, str]:
        """(sentence, question, answer) for 'subject subject relation value .'."""
        subject, relation, value = " ".join(self.words(2, 2)), self.rng.choice(self.pool), self.number()
        return f"{subject} {relation} {value} .", f"{subject} {relation} ?", value

    def filled(self, core: list[str], target: int, joiner: str = " ") -> str:
        """`core` units scattered, in order, among filler sentences until `target` tokens."""
        units, count = list(core), sum(len(unit.split()) for unit in core)
        while count < target:
            sentence = self.sentence()
            units.insert(self.rng.randint(0, len(units)), sentence)
            count += len(sentence.split())
        return joiner.join(units)


def _single_doc_qa(w: _Writer, target: int, _: dict) -> tuple[str, str, list[str]]:
    fact, question, answer = w.fact()
    distractors = [w.fact()[0] for _ in range(3)]
    return w.filled([fact, *distractors], target), question, [answer]


def _multi_doc_qa(w: _Writer, target: int, _: dict) -> tuple[str, str, list[str]]:
    head, bridge = " ".join(w.words(2, 2)), " ".join(w.words(2, 2))
    first, second, value = w.rng.choice(w.pool), w.rng.choice(w.pool), w.number()
    facts = [f"{head} {first} {bridge} .", f"{bridge} {second} {value} ."] + [w.fact()[0] for _ in range(4)]
    passages = [fact + " " + w.sentence() for fact in facts]
    while sum(len(p.split()) for p in passages) < target:
        passages.append(w.sentence() + " " + w.sentence())
    w.rng.shuffle(passages)
    context = "\n\n".join(f"{i} :\n{passage}" for i, passage in enumerate(passages, start=1))
    return context, f"{head} {first} {second} ?", [value]


def _few_shot(example: Callable[[], tuple[str, str]], joiner: str, target: int) -> tuple[str, str, list[str]]:
    """Examples 'text\\n= answer' until `target` tokens; the input is one more without its answer."""
    shots, count = [], 0
    while count < target:
        text, answer = example()
        shots.append(f"{text}\n= {answer}")
        count += len(shots[-1].split())
    text, answer = example()
    return joiner.join(shots), f"{text}\n=", [answer]


def _triviaqa(w: _Writer, target: int, _: dict) -> tuple[str, str, list[str]]:
    def example() -> tuple[str, str]:
        fact, question, answer = w.fact()
        return f"{w.sentence()} {fact} {w.sentence()}\n{question}", answer

    return _few_shot(example, "\n\n", target)


def _trec(w: _Writer, target: int, suite: dict) -> tuple[str, str, list[str]]:
    def example() -> tuple[str, str]:
        label = w.rng.choice(TREC_CLASSES)
        words = w.words(3, 7)
        words.insert(w.rng.randint(0, len(words)), suite["trec_cues"][label])
        return " ".join(words) + " ?", label

    return _few_shot(example, "\n", target)


def _samsum(w: _Writer, target: int, _: dict) -> tuple[str, str, list[str]]:
    def example() -> tuple[str, str]:
        speakers = w.words(2, 3)
        turns = [(speakers[i % len(speakers)], " ".join(w.words(3, 8))) for i in range(w.rng.randint(3, 6))]
        dialogue = "\n".join(f"{speaker} : {text} ." for speaker, text in turns)
        return dialogue, f"{turns[0][0]} {turns[0][1]} ."

    return _few_shot(example, "\n\n", target)


def _qmsum(w: _Writer, target: int, _: dict) -> tuple[str, str, list[str]]:
    speakers, topic = w.words(3, 5), w.rng.choice(w.pool)
    answer = f"{topic} {w.sentence()}"
    turns = [f"{w.rng.choice(speakers)} : {answer}"]
    while sum(len(turn.split()) for turn in turns) < target:
        turns.insert(w.rng.randint(0, len(turns)), f"{w.rng.choice(speakers)} : {w.sentence()}")
    return "\n".join(turns), f"{topic} ?", [answer]


def _multi_news(w: _Writer, target: int, _: dict) -> tuple[str, str, list[str]]:
    count = w.rng.randint(2, 4)
    headlines = [w.sentence() for _ in range(count)]
    bodies = [w.filled([], max(target // count, 1)) for _ in range(count)]
    context = "\n\n".join(f"{head}\n{body}" for head, body in zip(headlines, bodies, strict=True))
    return context, "", [" ".join(headlines)]


def _code_lines(w: _Writer, target: int) -> list[str]:
    lines: list[str] = []
    while sum(len(line.split()) for line in lines) < target:
        name, args = w.rng.choice(w.pool), w.words(1, 3)
        lines.append(f"{name} ( {' , '.join(args)} ) :")
        for arg in args:
            lines.append(f"    {arg} = {w.rng.choice(w.pool)} . {w.rng.choice(w.pool)} ( {w.number()} )")
        lines.append(f"    {w.rng.choice(w.pool)} {' + '.join(args)}")
    return lines


def _call_run(w: _Writer) -> tuple[list[str], str]:
    """Lines 'obj . method ( k )' for k = start, start+1, ...; the next line is the answer."""
    obj, method, start = w.rng.choice(w.pool), w.rng.choice(w.pool), w.rng.randrange(900)
    calls = [f"{obj} . {method} ( {start + i} )" for i in range(w.rng.randint(3, 6) + 1)]
    return calls[:-1], calls[-1]


def _lcc(w: _Writer, target: int, _: dict) -> tuple[str, str, list[str]]:
    run, answer = _call_run(w)
    return "\n".join(_code_lines(w, target) + run) + "\n", "", [answer]


def _repobench(w: _Writer, target: int, _: dict) -> tuple[str, str, list[str]]:
    snippets = []
    while sum(len(snippet.split()) for snippet in snippets) < target * 3 // 4:
        path = " / ".join(w.words(2, 3))
        snippets.append(f"# {path} . {w.rng.choice(w.pool)}\n" + "\n".join(_code_lines(w, 30)))
    run, answer = _call_run(w)
    in_file = _code_lines(w, max(target // 4, 1)) + run
    return "\n\n".join(snippets) + "\n\n", "\n".join(in_file) + "\n", [answer]


_BUILDERS = {
    "narrativeqa": _single_doc_qa,
    "qasper": _single_doc_qa,
    "multifieldqa_en": _single_doc_qa,
    "hotpotqa": _multi_doc_qa,
    "2wikimqa": _multi_doc_qa,
    "qmsum": _qmsum,
    "multi_news": _multi_news,
    "samsum": _samsum,
    "trec": _trec,
    "triviaqa": _triviaqa,
    "lcc": _lcc,
    "repobench-p": _repobench,
}


def _check_arguments(
    word_pool: Sequence[str], tasks: Sequence[str], records: int, context_words: int
) -> list[str]:
    pool = list(dict.fromkeys(word_pool))
    if len(pool) < MIN_POOL_SIZE:
        raise ValueError(f"word_pool has {len(pool)} distinct words; the suite needs {MIN_POOL_SIZE}")
    bad = [word for word in pool if not re.fullmatch(r"[^\W\d_]+", word)]
    if bad:
        raise ValueError(f"word_pool entries must be single words of letters, got {bad[:5]}")
    unknown = [task for task in tasks if task not in _BUILDERS]
    if unknown:
        raise ValueError(f"no synthetic version of {unknown}; available: {list(_BUILDERS)}")
    if records < 1 or context_words < MIN_CONTEXT_WORDS:
        raise ValueError(f"records_per_task={records} must be >= 1 and context_words={context_words} "
                         f">= {MIN_CONTEXT_WORDS}")  # fmt: skip
    return pool


def trec_cues(pool: Sequence[str], seed) -> dict[str, str]:
    """The suite's cue word of each trec label (one distinct pool word per label)."""
    cues = random.Random(f"{seed}-trec").sample(list(pool), len(TREC_CLASSES))
    return dict(zip(TREC_CLASSES, cues, strict=True))


def synthetic_record(pool: Sequence[str], task: str, index: int, context_words: int, seed, cues: dict) -> dict:
    """Raw record `index` of `task` in the suite of `seed` (`cues`: `trec_cues(pool, seed)`), deterministic
    given (seed, task, index); the pretraining corpus draws records of its own seeds with it."""
    rng = random.Random(f"{seed}-{task}-{index}")
    context, input_, answers = _BUILDERS[task](_Writer(pool, rng), context_words, {"trec_cues": cues})
    return {
        "input": input_,
        "context": context,
        "answers": answers,
        "length": len(input_.split()) + len(context.split()) + sum(len(a.split()) for a in answers),
        "dataset": task,
        "language": "en",
        "all_classes": list(TREC_CLASSES) if task == "trec" else None,
        "_id": f"{rng.getrandbits(96):024x}",
        "source": "synthetic",
    }


def generate_synthetic_longbench(
    word_pool: Sequence[str],
    *,
    tasks: Sequence[str] = PAPER_TASKS,
    records_per_task: int = 20,
    context_words: int = 2000,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Raw LongBench records per task; context + input hold at least `context_words` tokens."""
    pool = _check_arguments(word_pool, tasks, records_per_task, context_words)
    cues = trec_cues(pool, seed)
    return {
        task: [synthetic_record(pool, task, index, context_words, seed, cues) for index in range(records_per_task)]
        for task in tasks
    }


def write_synthetic_longbench(out_dir: str | Path, word_pool: Sequence[str], **kwargs) -> dict[str, Path]:
    """Write `<task>.jsonl` files of `generate_synthetic_longbench(word_pool, **kwargs)`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task, records in generate_synthetic_longbench(word_pool, **kwargs).items():
        paths[task] = out_dir / f"{task}.jsonl"
        with paths[task].open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in records)
    logger.info("wrote a synthetic LongBench suite (%d tasks) to %s", len(paths), out_dir)
    return paths
