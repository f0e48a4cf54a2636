"""LongBench v1: the official task table, readers for both data forms, and middle truncation.

Task table. `TASKS` (the prompt template and maximum generation length of all 21 LongBench v1
datasets), `PAPER_TASKS` (the 12 English tasks the REFINE paper reports), `TREC_CLASSES` and the
other benchmark constants live on the data floor, `refine.data.longbench_spec`, and are re-exported
here. The metric functions of each task are `DATASET_TO_METRIC` of `refine.eval.longbench_metrics`
(`LongBench/eval.py`).

Readers. Two forms are read into `LongBenchRecord`s:

- the official raw JSONL records (`input, context, answers, length, dataset, language,
  all_classes, _id`), with the prompt built as `template.format(context=..., input=...)` like
  `pred.py` (`prompt_format.format(**json_obj)`); `length` is the official word count;
- the prompt-formatted Parquet form (`prompt, answers, prompt_length, max_answer_length,
  total_length, max_gen_tokens, task`), whose prompts already carry the template; `length` is
  then `prompt_length`, in tokens of the tokenizer that made the file. This form has no
  `all_classes`: trec gets `TREC_CLASSES`, the label list of the official trec records (their
  `all_classes` field, quoted verbatim in public LongBench prediction files and evaluation scripts;
  its spellings "Lasting time of somethin" and "Group or organization of person" are the official
  ones). lsht (Chinese) has no such list available offline: it gets the sorted union of the gold
  answers of the file, and a warning is logged. Prompts are taken as given: in the 16K copies the
  REFINE authors used, lcc prompts end with "Next line of code:" without the template's final
  newline.

A directory holds one file per task: `<task>.jsonl`, `<task>.parquet` or `<task>_<max length>.parquet`.
With `from_hub=True` the source is a Hugging Face dataset name read with `datasets.load_dataset(source,
task, split="test")`, whose rows must have the raw schema. Every error on bad input names the file,
the record index and the field.

Prediction rules (`eval.longbench.protocol`):

- `official` (the paper config's default): THUDM/LongBench `LongBench/pred.py`, `get_pred`, exactly.
  `official_truncate` tokenises the prompt with the tokenizer's special tokens (so BOS counts inside
  the budget), and when it is longer than `max_length` (pred.py's `model2maxlen` value) decodes the
  first and the last `int(max_length / 2)` ids separately (skipping special tokens) and joins the two
  strings; the joined prompt is tokenised again for generation (the seam may merge tokens, as in
  pred.py). samsum (`SAMSUM_*`): generation ends on the tokenizer's newline token
  (`tokenizer.encode("\n", add_special_tokens=False)[-1]`) or EOS, and neither may come first
  (`min_length = context_length + 1`, i.e. at least one new token); the newline token is kept in the
  prediction, as pred.py keeps it, and the official first-line post-processing removes it.
- `budget` (the embedded default study): token ids are cut to `model_max_length - max_gen` without
  BOS (`prompt_token_budget`, `encode_prompt`); the decoded cut is re-tokenised with BOS, so prompt +
  generation can exceed `model_max_length` by a token; samsum stops at the first decoded "\n".
  Deviation kept for the default study only (its closed word vocabulary has no newline token).

Subsets (`eval.longbench.subset`): `all` reads every record; `fits` is the REFINE authors' rule, their
LongBench copies "filtered for <16K tokens" (princetonvisualai/ReFINE README, data/longbench/
*_16384.parquet): a record is kept when its prompt's tokens (BOS included) plus the task's official
generation budget fit `model_max_length` (16384). Every record of the authors' 14 files satisfies it
(largest prompt + max_gen: triviaqa 16376); their files are equally consistent with "prompt <= 16352"
(their TTT script's MAX_PROMPT_LENGTH = 16384 - 32), and no record of theirs lies where the two rules
differ, so the rule could not be told apart further without the raw data. `AUTHORS_SUBSET_SIZES`
holds their record counts; a selection that differs is logged.

Other deviations from the official code, with reasons:

- No chat template is applied (REFINE evaluates base models; `pred.py` wraps prompts only for chat
  models, and never for trec, triviaqa, samsum, lsht, lcc, repobench-p).
"""

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from refine.data.longbench_spec import (  # noqa: F401  (the task table, re-exported for the eval side)
    AUTHORS_SUBSET_LENGTH,
    AUTHORS_SUBSET_SIZES,
    CHINESE_TASKS,
    DATASET_TO_MAXLEN,
    DATASET_TO_METRIC_NAME,
    DATASET_TO_PROMPT,
    NEWLINE_STOP_TASKS,
    PAPER_TASKS,
    PROTOCOLS,
    SAMSUM_MIN_NEW_TOKENS,
    SUBSETS,
    TASKS,
    TREC_CLASSES,
    LongBenchTask,
    find_task_file,
    get_task,
    task_from_filename,
)

logger = logging.getLogger(__name__)

RAW_FIELDS = ("input", "context", "answers", "length", "dataset", "all_classes", "_id")
PARQUET_FIELDS = ("prompt", "answers", "prompt_length", "max_gen_tokens", "task")


@dataclass(frozen=True)
class LongBenchRecord:
    """One evaluation item: the full prompt (template applied) and what scoring needs."""

    prompt: str
    answers: tuple[str, ...]
    all_classes: tuple[str, ...] | None
    length: int
    task: str
    id: str
    source: str = "longbench"


class LongBenchFormatError(ValueError):
    """Bad LongBench input; the message names the file, the record index and the field."""

    def __init__(self, origin: str, index: int, field: str, problem: str):
        super().__init__(f"{origin}: record {index}: field {field!r}: {problem}")


def _answers(value: Any, origin: str, index: int) -> tuple[str, ...]:
    answers = None if isinstance(value, str) or not isinstance(value, Iterable) else list(value)
    if not answers or not all(isinstance(answer, str) for answer in answers):
        raise LongBenchFormatError(origin, index, "answers", f"expected a non-empty str list, got {value!r}")
    return tuple(answers)


def record_from_raw(raw: Mapping[str, Any], task: str, origin: str, index: int) -> LongBenchRecord:
    """Validate one official raw record and apply the task's prompt template."""
    for field in RAW_FIELDS:
        if field not in raw:
            raise LongBenchFormatError(origin, index, field, "missing")
    if raw["dataset"] not in (task, f"{task}_e"):
        raise LongBenchFormatError(origin, index, "dataset", f"{raw['dataset']!r} in a file of {task!r}")
    for field in ("input", "context"):
        if not isinstance(raw[field], str):
            raise LongBenchFormatError(origin, index, field, f"expected str, got {type(raw[field]).__name__}")
    classes = raw["all_classes"]
    if classes is not None and not all(isinstance(name, str) for name in classes):
        raise LongBenchFormatError(origin, index, "all_classes", f"expected null or strs, got {classes!r}")
    return LongBenchRecord(
        prompt=get_task(task).format_prompt(raw["context"], raw["input"]),
        answers=_answers(raw["answers"], origin, index),
        all_classes=None if classes is None else tuple(classes),
        length=int(raw["length"]),
        task=task,
        id=str(raw["_id"]),
        source=str(raw.get("source", "longbench")),
    )


def read_raw_jsonl(path: str | Path, task: str | None = None) -> list[LongBenchRecord]:
    """Official raw JSONL records of one task (task taken from the file name when not given)."""
    path = Path(path)
    task = task or task_from_filename(path)
    records = []
    with path.open("rb") as handle:
        for index, raw_line in enumerate(handle):
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise LongBenchFormatError(str(path), index, "<utf-8>", f"not UTF-8 at byte {error.start}") from None
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as error:
                raise LongBenchFormatError(str(path), index, "<json>", str(error)) from error
            records.append(record_from_raw(raw, task, str(path), index))
    return records


def _parquet_classes(task: str, answers: Iterable[tuple[str, ...]], origin: str) -> tuple[str, ...] | None:
    if task == "trec":
        return TREC_CLASSES
    if DATASET_TO_METRIC_NAME[task] != "classification_score":
        return None
    logger.warning("%s: no label set for %s; all_classes = union of the gold answers", origin, task)
    return tuple(sorted({answer for item in answers for answer in item}))


def read_prompt_parquet(path: str | Path, task: str | None = None) -> list[LongBenchRecord]:
    """Prompt-formatted Parquet records of one task (prompts already carry the template)."""
    path = Path(path)
    task = task or task_from_filename(path)
    frame = pd.read_parquet(path)
    for field in PARQUET_FIELDS:
        if field not in frame.columns:
            raise LongBenchFormatError(str(path), 0, field, "missing column")
    max_gen = get_task(task).max_gen
    rows = frame.to_dict("records")
    answers = [_answers(row["answers"], str(path), index) for index, row in enumerate(rows)]
    all_classes = _parquet_classes(task, answers, str(path))
    records = []
    for index, row in enumerate(rows):
        if row["task"] != task:
            raise LongBenchFormatError(str(path), index, "task", f"{row['task']!r} in a file of {task!r}")
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise LongBenchFormatError(str(path), index, "prompt", "expected a non-empty str")
        if int(row["max_gen_tokens"]) != max_gen:
            problem = f"{row['max_gen_tokens']} != official {max_gen} for {task}"
            raise LongBenchFormatError(str(path), index, "max_gen_tokens", problem)
        records.append(
            LongBenchRecord(row["prompt"], answers[index], all_classes, int(row["prompt_length"]), task,
                            f"{task}-{index}")
        )  # fmt: skip
    return records


def load_task(source: str | Path, task: str, *, from_hub: bool = False) -> list[LongBenchRecord]:
    """Records of one task from a local directory, or from a Hugging Face dataset when `from_hub`."""
    if from_hub:
        from datasets import load_dataset

        rows = load_dataset(str(source), task, split="test")
        return [record_from_raw(row, task, f"{source}:{task}", index) for index, row in enumerate(rows)]
    path = find_task_file(source, task)
    records = read_raw_jsonl(path, task) if path.suffix == ".jsonl" else read_prompt_parquet(path, task)
    if not records:  # an empty task would score NaN and pull the average with it
        raise ValueError(f"{path}: no records for LongBench task {task!r} (empty file)")
    return records


def load_longbench(
    source: str | Path, tasks: Sequence[str] = PAPER_TASKS, *, from_hub: bool = False
) -> dict[str, list[LongBenchRecord]]:
    """Records of several tasks, keyed by task, in the order given."""
    suite = {task: load_task(source, task, from_hub=from_hub) for task in tasks}
    logger.info("LongBench: %s", ", ".join(f"{task}={len(records)}" for task, records in suite.items()))
    return suite


def truncate_middle(ids: Sequence[int], max_len: int) -> list[int]:
    """First max_len // 2 and last max_len // 2 ids when longer than max_len (official pred.py)."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 to keep both ends of the prompt, got {max_len}")
    if len(ids) <= max_len:
        return list(ids)
    half = max_len // 2
    return list(ids[:half]) + list(ids[-half:])


def prompt_token_budget(model_max_length: int, task: str) -> int:
    """Tokens left for the prompt: the model's maximum length minus the task's generation budget."""
    max_gen = get_task(task).max_gen
    budget = model_max_length - max_gen
    if budget < 2:
        raise ValueError(f"model_max_length={model_max_length} leaves no prompt room after max_gen={max_gen} "
                         f"of {task}")  # fmt: skip
    return budget


def encode_prompt(prompt: str, tokenizer, max_prompt_tokens: int) -> list[int]:
    """Token ids of the prompt (the tokenizer's special tokens included), middle-truncated."""
    ids = tokenizer(prompt, truncation=False)["input_ids"]
    return truncate_middle(ids, max_prompt_tokens)


def official_truncate(prompt: str, tokenizer, max_length: int) -> str:
    """LongBench `pred.py`: the prompt itself when its ids (special tokens included) fit `max_length`,
    else the decoded first `int(max_length / 2)` ids joined to the decoded last ones (special tokens
    skipped in both halves)."""
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 to keep both ends of the prompt, got {max_length}")
    ids = tokenizer(prompt, truncation=False)["input_ids"]
    if len(ids) <= max_length:
        return prompt
    half = int(max_length / 2)
    return tokenizer.decode(ids[:half], skip_special_tokens=True) + tokenizer.decode(
        ids[-half:], skip_special_tokens=True
    )


def newline_token_id(tokenizer) -> int:
    """pred.py's samsum stop token: `tokenizer.encode("\\n", add_special_tokens=False)[-1]`."""
    ids = tokenizer.encode("\n", add_special_tokens=False)
    if not ids:
        raise ValueError("the tokenizer encodes '\\n' to no token: samsum's official newline stop is undefined")
    return ids[-1]


def fits_context(prompt_tokens: int, task: str, length: int) -> bool:
    """The authors' subset rule: prompt tokens (BOS included) + the task's official max_gen <= length."""
    return prompt_tokens + get_task(task).max_gen <= length
