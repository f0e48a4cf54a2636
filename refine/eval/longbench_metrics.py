"""LongBench v1 scoring with the numbers of the official evaluation, quirks included.

Source of every definition: THUDM/LongBench, `LongBench/metrics.py` (per-answer metrics) and
`LongBench/eval.py` (`dataset2metric`, `scorer`, `scorer_e`). The functions here are rewritten
from those definitions, not copied; they return the same values on every input, including the
behaviours that look like bugs but are part of the published numbers:

- `classification_score` removes items from the list it iterates over, so a class that follows a
  removed one is never checked and can stay in the match list (it then divides the score).
- `rouge_score` uses the `rouge==1.0.1` package (summary-level union LCS over sentences split on
  '.', words counted once per sentence set) and scores 0 on *any* exception: an empty prediction,
  a prediction made only of dots, or a sentence long enough to overflow the package's recursive LCS
  reconstruction (a `RecursionError`).
- `code_sim_score` keeps the first line (after leading newlines) that contains none of "`", "#",
  "//" and compares it with `fuzzywuzzy.fuzz.ratio`. The official requirements install no
  python-Levenshtein, so fuzzywuzzy falls back to `difflib.SequenceMatcher`; the C backend gives
  different ratios. `FUZZ_BACKEND` names the backend in use and a warning is logged at import when
  it is not difflib (scores would then differ from the official ones).
- `f1_score` returns the integer 0 when nothing overlaps; an empty prediction and an empty gold
  answer therefore score 0, not 1.
- Only trec, triviaqa, samsum and lsht keep just the first line of a prediction before scoring.

Deviations from the official code:

- `score_dataset` raises on an empty prediction list or on lists of different lengths instead of
  dividing by zero or silently truncating with `zip`.
- fuzzywuzzy's import-time "slow pure-python SequenceMatcher" warning is suppressed: the slow
  matcher is the one the official numbers need.
"""

import difflib
import logging
import math
import re
import string
import warnings
from collections import Counter
from collections.abc import Callable, Sequence

import jieba
import numpy as np
from rouge import Rouge

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from fuzzywuzzy import fuzz

logger = logging.getLogger(__name__)

FUZZ_BACKEND = f"{fuzz.SequenceMatcher.__module__}.{fuzz.SequenceMatcher.__name__}"
if fuzz.SequenceMatcher is not difflib.SequenceMatcher:
    logger.warning(
        "fuzzywuzzy uses %s, not difflib.SequenceMatcher: code similarity (lcc, repobench-p) will differ "
        "from the official LongBench numbers, which were computed without python-Levenshtein",
        FUZZ_BACKEND,
    )

# Chinese punctuation removed by the official `normalize_zh_answer` (LongBench/metrics.py).
CHINESE_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛"
    "｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰"
    "〾〿–—‘’‛“”„‟…‧﹏."
)  # fmt: skip
_ENGLISH_PUNCTUATION = frozenset(string.punctuation)
_ALL_PUNCTUATION = frozenset(string.punctuation + CHINESE_PUNCTUATION)

# Datasets whose predictions are cut to their first line before scoring (LongBench/eval.py).
FIRST_LINE_DATASETS = frozenset({"trec", "triviaqa", "samsum", "lsht"})

Metric = Callable[..., float]


def normalize_answer(text: str) -> str:
    """English normalisation: lower-case, drop ASCII punctuation, drop articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _ENGLISH_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def normalize_zh_answer(text: str) -> str:
    """Chinese normalisation: lower-case, drop ASCII and Chinese punctuation, drop all whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _ALL_PUNCTUATION)
    return "".join(text.split())


def f1_score(prediction_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    """Bag-of-tokens F1; the integer 0 when no token is shared (as official)."""
    num_same = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **_) -> float:
    """Token F1 after English normalisation."""
    return f1_score(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def _zh_tokens(text: str) -> list[str]:
    tokens = (normalize_zh_answer(token) for token in jieba.cut(text, cut_all=False))
    return [token for token in tokens if token]


def qa_f1_zh_score(prediction: str, ground_truth: str, **_) -> float:
    """Token F1 over jieba words, each normalised, empty ones dropped."""
    return f1_score(_zh_tokens(prediction), _zh_tokens(ground_truth))


def rouge_score(prediction: str, ground_truth: str, **_) -> float:
    """ROUGE-L F of `rouge==1.0.1`; 0 on any exception (empty text, recursion overflow, ...)."""
    try:
        scores = Rouge().get_scores([prediction], [ground_truth], avg=True)
    except Exception:  # official: bare `except:`; RecursionError from long sentences lands here too
        return 0.0
    return scores["rouge-l"]["f"]


def rouge_zh_score(prediction: str, ground_truth: str, **_) -> float:
    """ROUGE-L F over jieba words joined by spaces."""
    prediction = " ".join(jieba.cut(prediction, cut_all=False))
    ground_truth = " ".join(jieba.cut(ground_truth, cut_all=False))
    return rouge_score(prediction, ground_truth)


def classification_score(prediction: str, ground_truth: str, *, all_classes: Sequence[str], **_) -> float:
    """1/len(matches) when the gold class is among the classes named in the prediction, else 0.

    Classes that are strict substrings of the gold class are removed from the matches while the
    list is being iterated, which skips the element after each removal (official behaviour).
    """
    matches = [name for name in all_classes if name in prediction]
    for name in matches:  # noqa: B909 - mutating while iterating is the official behaviour
        if name in ground_truth and name != ground_truth:
            matches.remove(name)
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def _share_of_numbers_equal_to(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    if not numbers:
        return 0.0
    return sum(number == target for number in numbers) / len(numbers)


def count_score(prediction: str, ground_truth: str, **_) -> float:
    """Share of the numbers in the prediction that equal the gold count."""
    return _share_of_numbers_equal_to(prediction, str(ground_truth))


def retrieval_score(prediction: str, ground_truth: str, **_) -> float:
    """Share of the numbers in the prediction equal to the gold 'Paragraph N' index."""
    return _share_of_numbers_equal_to(prediction, re.findall(r"Paragraph (\d+)", ground_truth)[0])


def retrieval_zh_score(prediction: str, ground_truth: str, **_) -> float:
    """Share of the numbers in the prediction equal to the gold '段落N' index."""
    return _share_of_numbers_equal_to(prediction, re.findall(r"段落(\d+)", ground_truth)[0])


def first_code_line(prediction: str) -> str:
    """The first line after leading newlines without "`", "#" or "//"; "" when there is none."""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            return line
    return ""


def code_sim_score(prediction: str, ground_truth: str, **_) -> float:
    """fuzzywuzzy `ratio` / 100 between the first code line of the prediction and the gold line."""
    return fuzz.ratio(first_code_line(prediction), ground_truth) / 100


# The dataset -> metric table of LongBench/eval.py (`dataset2metric`), all 21 v1 datasets.
DATASET_TO_METRIC: dict[str, Metric] = {
    "narrativeqa": qa_f1_score,
    "qasper": qa_f1_score,
    "multifieldqa_en": qa_f1_score,
    "multifieldqa_zh": qa_f1_zh_score,
    "hotpotqa": qa_f1_score,
    "2wikimqa": qa_f1_score,
    "musique": qa_f1_score,
    "dureader": rouge_zh_score,
    "gov_report": rouge_score,
    "qmsum": rouge_score,
    "multi_news": rouge_score,
    "vcsum": rouge_zh_score,
    "trec": classification_score,
    "triviaqa": qa_f1_score,
    "samsum": rouge_score,
    "lsht": classification_score,
    "passage_retrieval_en": retrieval_score,
    "passage_count": count_score,
    "passage_retrieval_zh": retrieval_zh_score,
    "lcc": code_sim_score,
    "repobench-p": code_sim_score,
}


def score_prediction(
    dataset: str, prediction: str, ground_truths: Sequence[str], all_classes: Sequence[str] | None
) -> float:
    """Best score over the gold answers of one item, in [0, 1], after the official post-processing."""
    if dataset not in DATASET_TO_METRIC:
        raise KeyError(f"unknown LongBench dataset {dataset!r}; known: {sorted(DATASET_TO_METRIC)}")
    metric = DATASET_TO_METRIC[dataset]
    if dataset in FIRST_LINE_DATASETS:
        prediction = prediction.lstrip("\n").split("\n")[0]
    score = 0.0
    for ground_truth in ground_truths:
        score = max(score, metric(prediction, ground_truth, all_classes=all_classes))
    return score


def _check_lengths(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> None:
    if not predictions:
        raise ValueError("cannot score an empty list of predictions")
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists")


def score_dataset(
    dataset: str,
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    all_classes: Sequence[str] | None,
) -> float:
    """Official LongBench score of a dataset: mean item score x 100, rounded to 2 decimals."""
    _check_lengths(predictions, answers)
    total = 0.0
    for prediction, ground_truths in zip(predictions, answers, strict=True):
        total += score_prediction(dataset, prediction, ground_truths, all_classes)  # sequential, as official
    return round(100 * total / len(predictions), 2)


def length_bucket(length: int) -> str:
    """LongBench-E length interval of a record: '0-4k', '4-8k' or '8k+'."""
    if length < 4000:
        return "0-4k"
    return "4-8k" if length < 8000 else "8k+"


def score_dataset_e(
    dataset: str,
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    lengths: Sequence[int],
    all_classes: Sequence[str] | None,
) -> dict[str, float]:
    """LongBench-E scores per length interval (x 100, 2 decimals); NaN for an empty interval."""
    _check_lengths(predictions, answers)
    if len(lengths) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(lengths)} lengths")
    buckets: dict[str, list[float]] = {"0-4k": [], "4-8k": [], "8k+": []}
    for prediction, ground_truths, length in zip(predictions, answers, lengths, strict=True):
        score = score_prediction(dataset, prediction, ground_truths, all_classes)
        buckets[length_bucket(length)].append(score)
    # np.mean (pairwise summation) as in the official scorer_e, so rounding ties break the same way.
    return {
        key: round(100 * float(np.mean(scores)), 2) if scores else math.nan for key, scores in buckets.items()
    }
