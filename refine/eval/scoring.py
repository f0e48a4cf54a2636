"""Scores of one model output against its gold answers: RULER's, the QA rule, and partial credit.

All functions are pure and score a single sample in [0, 1]; averaging (and RULER's ×100 and
rounding to 2 decimals) is the caller's job.

- ``string_match_all`` / ``string_match_part``: NVIDIA/RULER ``scripts/eval/synthetic/constants.py``
  (NIAH scores the fraction of gold values found, QA whether any gold answer is found;
  case-insensitive substring tests). RULER's ``postprocess_pred`` (strip, control characters to
  newlines) cannot change a substring match of a reference without control characters, so it is
  not repeated here.
- ``qa_substring_match``: REFINE.md §4, in the authors' order (princetonvisualai/ReFINE
  ``verl/verl/utils/reward_score/ruler.py``): the raw output is cut to its first line
  (``split("\n")[0]``), that line is stripped, every character U+0000–U+001F becomes a line break,
  the result is stripped again (and not cut again), and the score is 1 if any lower-cased gold answer
  is a substring of it (lower-cased). So a leading newline scores 0, and an answer after a tab or a
  carriage return on the first line still counts.
- Partial credit for small models (FEASIBILITY.md): ``first_token_accuracy`` and ``char_accuracy``,
  defined in their docstrings; ``best_over_references`` applies either to a list of gold answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_CONTROL = re.compile(r"[\x00-\x1f]")


def string_match_all(pred: str, refs: list[str]) -> float:
    """Fraction of ``refs`` that occur in ``pred``, case-insensitively (RULER NIAH metric)."""
    if not refs:
        raise ValueError("string_match_all needs at least one reference")
    pred = pred.lower()
    return sum(r.lower() in pred for r in refs) / len(refs)


def string_match_part(pred: str, refs: list[str]) -> float:
    """1.0 if any of ``refs`` occurs in ``pred``, case-insensitively (RULER QA metric)."""
    if not refs:
        raise ValueError("string_match_part needs at least one reference")
    pred = pred.lower()
    return float(any(r.lower() in pred for r in refs))


def qa_response(pred: str) -> str:
    """The authors' QA response: the raw output's first line, then stripped, control characters
    (U+0000-U+001F) mapped to "\\n", stripped again (ReFINE reward_score/ruler.py, in that order)."""
    line = pred.split("\n")[0]
    return _CONTROL.sub("\n", line.strip()).strip()


def qa_substring_match(pred: str, answers: list[str]) -> float:
    """1.0 if any lower-cased answer is a substring of the lower-cased ``qa_response(pred)``."""
    if not answers:
        raise ValueError("qa_substring_match needs at least one answer")
    line = qa_response(pred).lower()
    return float(any(a.lower() in line for a in answers))


def first_token_accuracy(pred_tokens: list[int], gold_tokens: list[int]) -> float:
    """1.0 if the first generated token id equals the first gold token id, else 0.0.

    Both are token ids of the same tokenizer; the gold ids are the answer as the model should
    continue the prompt (e.g. the gold value tokenized after the answer prefix).
    """
    if not gold_tokens:
        raise ValueError("first_token_accuracy needs a non-empty gold answer")
    return float(bool(pred_tokens) and pred_tokens[0] == gold_tokens[0])


def char_accuracy(pred: str, gold: str) -> float:
    """Position-aligned character accuracy of ``pred`` against ``gold``.

    Both strings are compared after removing leading whitespace; the score is the number of
    positions ``i < len(gold)`` with ``pred[i] == gold[i]``, divided by ``len(gold)``. Missing
    characters count as wrong and characters of ``pred`` beyond ``len(gold)`` are ignored, so a
    prediction that starts with the gold value scores 1.0. Case-sensitive.
    """
    gold = gold.lstrip()
    if not gold:
        raise ValueError("char_accuracy needs a non-empty gold answer")
    pred = pred.lstrip()
    return sum(p == g for p, g in zip(pred, gold, strict=False)) / len(gold)


def best_over_references(metric: Callable[[str, str], float], pred: str, refs: list[str]) -> float:
    """Highest ``metric(pred, ref)`` over the gold answers ``refs``."""
    if not refs:
        raise ValueError("best_over_references needs at least one reference")
    return max(metric(pred, ref) for ref in refs)
