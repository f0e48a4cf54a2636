"""LongBench v1's task table: the benchmark's constants, on the data floor.

Prompt templates and maximum generation lengths of all 21 LongBench v1 datasets, character for
character from THUDM/LongBench `LongBench/config/dataset2prompt.json` and
`LongBench/config/dataset2maxlen.json` (the typo "asconcisely" in the narrativeqa prompt and the stray
spaces in the qasper, multi_news and lcc prompts included), the metric name of each task
(`LongBench/eval.py`), the 12 tasks REFINE reports, the trec label list and the REFINE authors'
subset sizes, and where a task's file lies in a LongBench directory
(`find_task_file`). Both the synthetic LongBench generator (`refine.data.synthetic_longbench`),
the config check and the evaluation (`refine.eval.longbench`, which re-exports these names) read
them from here, so data never imports the evaluation.
"""

import re
from dataclasses import dataclass
from pathlib import Path

# Verbatim from THUDM/LongBench LongBench/config/dataset2prompt.json.
DATASET_TO_PROMPT: dict[str, str] = {
    "narrativeqa": "You are given a story, which can be either a novel or a movie script, and a "
    "question. Answer the question asconcisely as you can, using a single phrase if possible. Do not "
    "provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story "
    "asconcisely as you can, using a single phrase if possible. Do not provide any "
    "explanation.\n\nQuestion: {input}\n\nAnswer:",
    "qasper": "You are given a scientific article and a question. Answer the question as concisely "
    "as you can, using a single phrase or sentence if possible. If the question cannot be answered "
    'based on the information in the article, write "unanswerable". If the question is a yes/no '
    'question, answer "yes", "no", or "unanswerable". Do not provide any explanation.\n\nArticle: '
    "{context}\n\n Answer the question based on the above article as concisely as you can, using a "
    "single phrase or sentence if possible. If the question cannot be answered based on the information "
    'in the article, write "unanswerable". If the question is a yes/no question, answer "yes", '
    '"no", or "unanswerable". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:',
    "multifieldqa_en": "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the "
    "following question based on the above text, only give me the answer and do not output any other "
    "words.\n\nQuestion: {input}\nAnswer:",
    "multifieldqa_zh": "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在"
    "请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其"
    "他字词。\n\n问题：{input}\n回答：",
    "hotpotqa": "Answer the question based on the given passages. Only give me the answer and do "
    "not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question "
    "based on the given passages. Only give me the answer and do not output any other "
    "words.\n\nQuestion: {input}\nAnswer:",
    "2wikimqa": "Answer the question based on the given passages. Only give me the answer and do "
    "not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question "
    "based on the given passages. Only give me the answer and do not output any other "
    "words.\n\nQuestion: {input}\nAnswer:",
    "musique": "Answer the question based on the given passages. Only give me the answer and do not "
    "output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question "
    "based on the given passages. Only give me the answer and do not output any other "
    "words.\n\nQuestion: {input}\nAnswer:",
    "dureader": "请基于给定的文章回答下述问题。\n\n文章：{context}\n"
    "\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回"
    "答：",
    "gov_report": "You are given a report by a government agency. Write a one-page summary of the "
    "report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
    "qmsum": "You are given a meeting transcript and a query containing a question or instruction. "
    "Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query "
    "based on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:",
    "multi_news": "You are given several news passages. Write a one-page summary of all news. "
    "\n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:",
    "vcsum": "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。"
    "\n会议记录：\n{context}\n\n会议总结：",
    "trec": "Please determine the type of the question below. Here are some examples of "
    "questions.\n\n{context}\n{input}",
    "triviaqa": "Answer the question based on the given passage. Only give me the answer and do not "
    "output any other words. The following are some examples.\n\n{context}\n\n{input}",
    "samsum": "Summarize the dialogue into a few short sentences. The following are some "
    "examples.\n\n{context}\n\n{input}",
    "lsht": "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}",
    "passage_count": "There are some paragraphs below sourced from Wikipedia. Some of them may be "
    "duplicates. Please carefully read these paragraphs and determine how many unique paragraphs there "
    "are after removing duplicates. In other words, how many non-repeating paragraphs are there in "
    "total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing "
    "duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe "
    "final answer is: ",
    "passage_retrieval_en": "Here are 30 paragraphs from Wikipedia, along with an abstract. Please "
    "determine which paragraph the abstract is from.\n\n{context}\n\nThe following is an "
    "abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is from. The "
    'answer format must be like "Paragraph 1", "Paragraph 2", etc.\n\nThe answer is: ',
    "passage_retrieval_zh": "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要"
    "出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{i"
    'nput}\n\n请输入摘要所属段落的编号。答案格式必须是"段落'
    '1"，"段落2"等格式\n\n答案是：',
    "lcc": "Please complete the code given below. \n{context}Next line of code:\n",
    "repobench-p": "Please complete the code given below. \n{context}{input}Next line of code:\n",
}

# Verbatim from THUDM/LongBench LongBench/config/dataset2maxlen.json (max new tokens).
DATASET_TO_MAXLEN: dict[str, int] = {
    "narrativeqa": 128,
    "qasper": 128,
    "multifieldqa_en": 64,
    "multifieldqa_zh": 64,
    "hotpotqa": 32,
    "2wikimqa": 32,
    "musique": 32,
    "dureader": 128,
    "gov_report": 512,
    "qmsum": 512,
    "multi_news": 512,
    "vcsum": 512,
    "trec": 64,
    "triviaqa": 32,
    "samsum": 128,
    "lsht": 64,
    "passage_count": 32,
    "passage_retrieval_en": 32,
    "passage_retrieval_zh": 32,
    "lcc": 64,
    "repobench-p": 64,
}


CHINESE_TASKS = frozenset({"multifieldqa_zh", "dureader", "vcsum", "lsht", "passage_retrieval_zh"})

# The 12 English tasks with contexts under 16K tokens that REFINE reports (REFINE.md section 4).
PAPER_TASKS = (
    "narrativeqa",
    "qasper",
    "multifieldqa_en",
    "hotpotqa",
    "2wikimqa",
    "qmsum",
    "multi_news",
    "samsum",
    "trec",
    "triviaqa",
    "lcc",
    "repobench-p",
)

# pred.py ends samsum generations at the first "\n" (eos_token_id includes the newline token).
NEWLINE_STOP_TASKS = frozenset({"samsum"})
# LongBench/pred.py, samsum: min_length=context_length+1 (EOS and newline barred for 1 new token).
SAMSUM_MIN_NEW_TOKENS = 1
PROTOCOLS = ("budget", "official")
SUBSETS = ("all", "fits")
# Record counts of the REFINE authors' filtered copies, princetonvisualai/ReFINE data/longbench/<task>_16384.parquet.
AUTHORS_SUBSET_LENGTH = 16384
AUTHORS_SUBSET_SIZES = {
    "narrativeqa": 61, "qasper": 191, "multifieldqa_en": 143, "hotpotqa": 96, "2wikimqa": 185, "musique": 17,
    "gov_report": 16, "qmsum": 109, "multi_news": 193, "trec": 200, "triviaqa": 127, "samsum": 155,
    "lcc": 488, "repobench-p": 320,
}  # fmt: skip

# all_classes of the official trec records (THUDM/LongBench data, field `all_classes`), in order.
TREC_CLASSES = (
    "Food", "Date", "Order, rank", "Speed", "Disease and medicine", "Word with a special property",
    "Abbreviation", "Language", "Letter like a-z", "Other entity", "Animal", "Expression abbreviated",
    "Price", "Techniques and method", "Musical instrument", "Mountain", "Currency name", "Event",
    "Product", "State", "Individual", "Organ of body", "Reason", "Manner of an action", "City",
    "Religion", "Invention, book and other creative piece", "Distance, linear measure", "Temperature",
    "Postcode or other code", "Size, area and volume", "Sport", "Country", "Other location",
    "Lasting time of somethin", "Equivalent term", "Description of something", "Weight", "Vehicle",
    "Color", "Other number", "Definition of something", "Element and substance",
    "Description of a person", "Symbols and sign", "Number of something", "Plant", "Percent, fraction",
    "Group or organization of person", "Title of a person",
)  # fmt: skip

# The official metric of each task (LongBench/eval.py `dataset2metric`), by the name of its function in
# `refine.eval.longbench_metrics` (which holds the functions; a test checks the two tables agree).
DATASET_TO_METRIC_NAME: dict[str, str] = {
    "narrativeqa": "qa_f1_score",
    "qasper": "qa_f1_score",
    "multifieldqa_en": "qa_f1_score",
    "multifieldqa_zh": "qa_f1_zh_score",
    "hotpotqa": "qa_f1_score",
    "2wikimqa": "qa_f1_score",
    "musique": "qa_f1_score",
    "dureader": "rouge_zh_score",
    "gov_report": "rouge_score",
    "qmsum": "rouge_score",
    "multi_news": "rouge_score",
    "vcsum": "rouge_zh_score",
    "trec": "classification_score",
    "triviaqa": "qa_f1_score",
    "samsum": "rouge_score",
    "lsht": "classification_score",
    "passage_retrieval_en": "retrieval_score",
    "passage_count": "count_score",
    "passage_retrieval_zh": "retrieval_zh_score",
    "lcc": "code_sim_score",
    "repobench-p": "code_sim_score",
}


@dataclass(frozen=True)
class LongBenchTask:
    """One LongBench v1 dataset: official prompt template, generation budget and metric."""

    name: str
    prompt_template: str
    max_gen: int
    language: str

    @property
    def metric_name(self) -> str:
        return DATASET_TO_METRIC_NAME[self.name]

    def format_prompt(self, context: str, input: str) -> str:  # noqa: A002 - the official field name
        return self.prompt_template.format(context=context, input=input)


TASKS: dict[str, LongBenchTask] = {
    name: LongBenchTask(name, template, DATASET_TO_MAXLEN[name], "zh" if name in CHINESE_TASKS else "en")
    for name, template in DATASET_TO_PROMPT.items()
}


def get_task(name: str) -> LongBenchTask:
    if name not in TASKS:
        raise KeyError(f"unknown LongBench task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


def task_from_filename(path: Path) -> str:
    """`trec.jsonl`, `trec_e.jsonl`, `trec_16384.parquet` -> 'trec'."""
    stem = re.sub(r"_\d+$", "", path.name.split(".")[0])
    for name in (stem, stem.removesuffix("_e")):
        if name in TASKS:
            return name
    raise KeyError(f"{path}: file name names no LongBench task; known: {sorted(TASKS)}")


def find_task_file(directory: str | Path, task: str) -> Path:
    """The one file of `task` in `directory`: <task>.jsonl, <task>.parquet or <task>_<n>.parquet."""
    directory = Path(directory)
    get_task(task)
    exact = [directory / f"{task}.jsonl", directory / f"{task}.parquet"]
    candidates = sorted(directory.glob(f"{task}_*.parquet"))
    sized = [p for p in candidates if re.fullmatch(r"_\d+", p.stem[len(task) :])]
    found = [p for p in exact if p.is_file()] + sized
    if not found:
        raise FileNotFoundError(f"{directory}: no file for LongBench task {task!r} "
                                f"(looked for {task}.jsonl, {task}.parquet, {task}_<n>.parquet)")  # fmt: skip
    if len(found) > 1:
        raise ValueError(f"{directory}: several files for LongBench task {task!r}: {[p.name for p in found]}")
    return found[0]
