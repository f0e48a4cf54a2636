"""RULER QA prompts: the authors' prompt files, builders from SQuAD / HotpotQA, and an offline generator.

A QA record is ``{index, task, input, outputs, prompt_length, max_new_tokens, length}``: ``input`` is
the whole prompt the model continues, ``outputs`` the gold answers (any one counts), ``length`` is
RULER's ``prompt_length + max_new_tokens`` (``None`` when a file gives no prompt length).

Three sources, one prompt format:
- ``read_qa_records``: the authors' prompt-formatted Parquet/JSONL (``index, prompt, answer, ...``).
- ``squad_corpus`` / ``hotpotqa_corpus`` + ``build_ruler_qa``: RULER's ``qa_1`` / ``qa_2`` built
  from Hugging Face rows (``load_qa_rows`` reads the hub datasets or a local copy).
- ``synthetic_qa_corpus`` + ``build_ruler_qa``: facts about invented entities from a caller-given
  word pool plus numbers, for small offline models.

``build_ruler_qa`` follows NVIDIA/RULER ``scripts/data/synthetic/qa.py``: the gold documents, then the
other paragraphs of the same article, then random documents as distractors, shuffled and numbered
``Document {i}:``; the number of documents is binary-searched on the first question, and a question
that does not fit drops 10 documents at a time (RULER's ``incremental``).

Templates: ``"authors"`` is the prompt of the authors' files (REFINE.md §4), which is LongBench's
``hotpotqa`` prompt (THUDM/LongBench ``config/dataset2prompt.json``) around RULER's numbered
documents; ``"ruler"`` is RULER's own (``scripts/data/synthetic/constants.py``, ``TASKS["qa"]``,
template + answer prefix as ``scripts/data/prepare.py`` joins them).

Deviations from RULER, with reasons:
1. The default template is the authors' (their evaluation files use it), not RULER's.
2. When the budget exceeds the corpus, every document is used once; RULER repeats the corpus,
   which would repeat the gold passage. Real SQuAD/HotpotQA corpora never hit this at 16K.
3. Randomness is a ``random.Random`` per question seeded from ``(seed, task, index)``, and the
   documents are shuffled with it; RULER uses one global stream and a fixed-seed shuffle.
4. Rows come from the Hugging Face datasets (``rajpurkar/squad_v2`` validation,
   ``hotpotqa/hotpot_qa`` distractor validation) instead of RULER's downloaded JSON of the same
   splits; unanswerable SQuAD questions (no gold text) are skipped as RULER skips ``is_impossible``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from refine.data.jsonl import read_jsonl
from refine.data.ruler import count_tokens, largest_fitting

logger = logging.getLogger(__name__)

# NVIDIA/RULER scripts/data/synthetic/qa.py: document format, joined by a blank line.
DOCUMENT_PROMPT = "Document {i}:\n{document}"
DOCUMENT_SEPARATOR = "\n\n"
QA_TEMPLATES = {
    # THUDM/LongBench config/dataset2prompt.json "hotpotqa" ({input} renamed {query}); the authors' files.
    "authors": (
        "Answer the question based on the given passages. Only give me the answer and do not output any "
        "other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the "
        "given passages. Only give me the answer and do not output any other words.\n\nQuestion: {query}\n"
        "Answer:"
    ),
    # NVIDIA/RULER scripts/data/synthetic/constants.py TASKS["qa"]: template + answer_prefix " Answer:".
    "ruler": (
        "Answer the question based on the given documents. Only give me the answer and do not output any "
        "other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on "
        "the given documents. Only give me the answer and do not output any other words.\n\nQuestion: "
        "{query} Answer:"
    ),
}
QA_TOKENS_TO_GENERATE = 32  # RULER TASKS["qa"]["tokens_to_generate"]; REFINE: <= 32 new tokens
RULER_DOC_STEP = 10  # RULER qa.py `incremental`
HF_SOURCES = {"squad": ("rajpurkar/squad_v2", None), "hotpotqa": ("hotpotqa/hotpot_qa", "distractor")}


@dataclass
class QAQuestion:
    """One question: gold answers, gold document ids, ids of related (same-article) documents."""

    query: str
    outputs: list[str]
    gold: list[int]
    related: list[int] = field(default_factory=list)


@dataclass
class QACorpus:
    """Documents (deduplicated, sorted as RULER sorts them) and the questions over them."""

    docs: list[str]
    questions: list[QAQuestion]


def format_qa_prompt(documents: list[str], question: str, template: str = "authors") -> str:
    """The QA prompt: numbered documents inside ``QA_TEMPLATES[template]``."""
    if template not in QA_TEMPLATES:
        raise ValueError(f"unknown QA template {template!r}; known: {sorted(QA_TEMPLATES)}")
    context = DOCUMENT_SEPARATOR.join(
        DOCUMENT_PROMPT.format(i=i + 1, document=d) for i, d in enumerate(documents)
    )
    return QA_TEMPLATES[template].format(context=context, query=question)


def _answers(value, where: str) -> list[str]:
    answers = list(value) if not isinstance(value, str) and isinstance(value, Iterable) else None
    if not answers or not all(isinstance(a, str) for a in answers):
        raise ValueError(f"{where}: field 'answer' must be a non-empty list of str, got {value!r}")
    return answers


def read_qa_records(path: str | Path, max_new_tokens: int = QA_TOKENS_TO_GENERATE) -> list[dict]:
    """Records from the authors' prompt-formatted ``.parquet`` or ``.jsonl`` (``index, prompt, answer``)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd

        rows = pd.read_parquet(path).to_dict("records")
    elif path.suffix == ".jsonl":
        rows = read_jsonl(path)
    else:
        raise ValueError(f"{path}: expected a .parquet or .jsonl file")
    records = []
    for i, row in enumerate(rows):
        where = f"{path}: record {i}"
        for name in ("index", "prompt", "answer"):
            if name not in row:
                raise ValueError(f"{where}: missing field {name!r} (has {sorted(row)})")
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise ValueError(f"{where}: field 'prompt' must be a non-empty str")
        prompt_length = row.get("prompt_length")
        prompt_length = None if prompt_length is None else int(prompt_length)
        records.append(
            {
                "index": int(row["index"]),
                "task": str(row.get("task", path.stem)),
                "input": row["prompt"],
                "outputs": _answers(row["answer"], where),
                "prompt_length": prompt_length,
                "max_new_tokens": max_new_tokens,
                "length": None if prompt_length is None else prompt_length + max_new_tokens,
            }
        )
    logger.info("read %d QA records from %s", len(records), path)
    return records


def load_qa_rows(dataset: str, source: str | Path | None = None, split: str = "validation"):
    """Rows of SQuAD v2 / HotpotQA: from the hub (``source=None``), a ``save_to_disk`` folder or JSON(L)."""
    import datasets

    if dataset not in HF_SOURCES:
        raise ValueError(f"unknown QA dataset {dataset!r}; known: {sorted(HF_SOURCES)}")
    if source is None:
        name, config = HF_SOURCES[dataset]
        return datasets.load_dataset(name, config, split=split)
    source = Path(source)
    if source.is_dir():
        loaded = datasets.load_from_disk(str(source))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset("json", data_files=str(source), split="train")


def _field(row: Mapping, name: str, where: str):
    if name not in row:
        raise ValueError(f"{where}: missing field {name!r} (has {sorted(row)})")
    return row[name]


def squad_corpus(rows: Iterable[Mapping]) -> QACorpus:
    """RULER's ``read_squad`` on Hugging Face SQuAD rows (``title, context, question, answers``)."""
    rows = list(rows)
    contexts = [_field(r, "context", f"squad row {i}") for i, r in enumerate(rows)]
    docs = sorted(set(contexts))
    doc_id = {c: i for i, c in enumerate(docs)}
    article_docs: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        ids = article_docs.setdefault(_field(row, "title", f"squad row {i}"), [])
        if doc_id[row["context"]] not in ids:
            ids.append(doc_id[row["context"]])
    questions = []
    for i, row in enumerate(rows):
        texts = list(_field(_field(row, "answers", f"squad row {i}"), "text", f"squad row {i}.answers"))
        if texts:
            gold = doc_id[row["context"]]
            related = [d for d in article_docs[row["title"]] if d != gold]
            questions.append(QAQuestion(_field(row, "question", f"squad row {i}"), texts, [gold], related))
    return QACorpus(docs, questions)


def hotpotqa_corpus(rows: Iterable[Mapping]) -> QACorpus:
    """RULER's ``read_hotpotqa`` on Hugging Face rows (``question, answer, context{title, sentences}``)."""
    rows = list(rows)
    row_docs = []
    for i, row in enumerate(rows):
        context = _field(row, "context", f"hotpotqa row {i}")
        titles = _field(context, "title", f"hotpotqa row {i}.context")
        sentences = _field(context, "sentences", f"hotpotqa row {i}.context")
        row_docs.append([f"{t}\n{''.join(s)}" for t, s in zip(titles, sentences, strict=True)])
    docs = sorted({d for ds in row_docs for d in ds})
    doc_id = {d: i for i, d in enumerate(docs)}
    questions = [
        QAQuestion(
            _field(row, "question", f"hotpotqa row {i}"),
            [_field(row, "answer", f"hotpotqa row {i}")],
            [doc_id[d] for d in ds],
        )
        for i, (row, ds) in enumerate(zip(rows, row_docs, strict=True))
    ]
    return QACorpus(docs, questions)


def synthetic_qa_corpus(
    word_pool: list[str], n_passages: int, seed: int, facts_per_passage: int = 3, value_digits: int = 3
) -> QACorpus:
    """Passages of facts "The {attribute} of {entity} is {number}." and one question per passage.

    Entities are distinct pairs of pool words, so the asked (entity, attribute) pair is stated only in
    its own passage; every other passage is a distractor.
    """
    pool = sorted(set(word_pool))
    if len(pool) < max(2, facts_per_passage) or len(pool) ** 2 < n_passages:
        raise ValueError(f"word_pool of {len(pool)} words is too small for {n_passages} passages")
    rng = random.Random(f"ruler-qa-synthetic:{seed}")
    entities: dict[str, None] = {}  # insertion-ordered set: deterministic under hash randomisation
    while len(entities) < n_passages:
        entities[" ".join(rng.sample(pool, 2))] = None
    docs, questions = [], []
    for entity in entities:
        attributes = rng.sample(pool, facts_per_passage)
        values = [str(rng.randint(10 ** (value_digits - 1), 10**value_digits - 1)) for _ in attributes]
        docs.append(" ".join(f"The {a} of {entity} is {v}." for a, v in zip(attributes, values, strict=True)))
        asked = rng.randrange(facts_per_passage)
        questions.append(
            QAQuestion(f"What is the {attributes[asked]} of {entity}?", [values[asked]], [len(docs) - 1])
        )
    return QACorpus(docs, questions)


def pick_documents(corpus: QACorpus, question: QAQuestion, num_docs: int, rng: random.Random) -> list[str]:
    """Gold, then related, then random documents (RULER ``generate_input_output``), shuffled."""
    num_docs = min(num_docs, len(corpus.docs))
    gold, related = question.gold, question.related
    if num_docs - len(gold) > len(related):
        taken = set(gold) | set(related)
        others = [i for i in range(len(corpus.docs)) if i not in taken]
        chosen = gold + related + rng.sample(others, num_docs - len(gold) - len(related))
    else:
        chosen = gold + rng.sample(related, num_docs - len(gold))
    documents = [corpus.docs[i] for i in chosen]
    rng.shuffle(documents)
    return documents


def build_ruler_qa(
    corpus: QACorpus,
    context_length: int,
    n_samples: int,
    tokenizer,
    seed: int,
    task: str = "qa",
    template: str = "authors",
    tokens_to_generate: int = QA_TOKENS_TO_GENERATE,
) -> list[dict]:
    """RULER QA records for the first ``n_samples`` questions, each fitting ``context_length`` tokens."""
    if n_samples > len(corpus.questions):
        raise ValueError(f"{task}: n_samples={n_samples} exceeds the {len(corpus.questions)} questions")

    def prompt(index: int, num_docs: int) -> str:
        rng = random.Random(f"ruler-qa:{seed}:{task}:{index}")
        question = corpus.questions[index]
        return format_qa_prompt(pick_documents(corpus, question, num_docs, rng), question.query, template)

    def fits(index: int, num_docs: int) -> bool:
        return count_tokens(tokenizer, prompt(index, num_docs)) + tokens_to_generate <= context_length

    first_gold = len(corpus.questions[0].gold)
    if not fits(0, first_gold):
        raise ValueError(f"{task}: context_length={context_length} cannot hold question 0's gold documents")
    num_docs = largest_fitting(lambda n: fits(0, n), minimum=first_gold, maximum=len(corpus.docs))
    records = []
    for index in tqdm(range(n_samples), desc=f"{task}@{context_length}", leave=False):
        used, minimum = num_docs, len(corpus.questions[index].gold)
        while not fits(index, used):
            if used == minimum:
                raise ValueError(f"{task}: question {index} does not fit context_length={context_length}")
            used = max(minimum, used - RULER_DOC_STEP)
        text = prompt(index, used)
        prompt_length = count_tokens(tokenizer, text)
        records.append(
            {
                "index": index,
                "task": task,
                "input": text,
                "outputs": list(corpus.questions[index].outputs),
                "prompt_length": prompt_length,
                "max_new_tokens": tokens_to_generate,
                "length": prompt_length + tokens_to_generate,
                "num_docs": used,
            }
        )
    logger.info(
        "%s: %d samples at %d tokens, %d documents (seed %d)", task, n_samples, context_length, num_docs, seed
    )
    return records
