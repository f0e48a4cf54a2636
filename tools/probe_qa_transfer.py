"""Does a probed model's retrieval carry over to the synthetic RULER-QA passages? (docs/default_study.md, session 7)

Reads a `tools/probe_default_study.py` work directory (its JSON's `work_dir`: `tokenizer/` and
`<phase>/model/`) and scores 50 QA items at 256 tokens (the evaluation's generator, seed 7000 + 256,
one fact per passage) with the prompt as it is and cut three ways: ending at the question's "?";
the passages followed by the recall-format query " E2?" (the entity's last word, which ends the
passage's fact "The ATTR of E1 E2 is VAL." as a dense fact ends "KEY is VAL."); the same followed
by "\\nAnswer:". A prediction is right when it contains the gold value.

    python tools/probe_qa_transfer.py /tmp/probe-XXXX phase1 main
"""

import argparse
import sys
from pathlib import Path

import torch

from refine.data.corpus import KEY_WORDS
from refine.data.ruler_qa import build_ruler_qa, synthetic_qa_corpus
from refine.data.tokenizer import load_tokenizer
from refine.eval.generate import greedy_generate
from refine.models.registry import load_model


def _passages(prompt: str) -> str:
    return prompt[: prompt.rindex("\n\nAnswer the question")]


def _entity_end(prompt: str) -> str:
    return prompt.rsplit("Question: ", 1)[1].split("?")[0].split()[-1]


CUTS = {
    "full prompt": lambda p: p,
    "ends at '?'": lambda p: p[: p.rindex("\nAnswer:")],
    "passages + ' E2?'": lambda p: f"{_passages(p)} {_entity_end(p)}?",
    "passages + ' E2?\\nAnswer:'": lambda p: f"{_passages(p)} {_entity_end(p)}?\nAnswer:",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("work", type=Path, help="the probe's work_dir")
    p.add_argument("phases", nargs="+", help="phase1 and/or main")
    args = p.parse_args()
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(args.work / "tokenizer")
    corpus = synthetic_qa_corpus(list(KEY_WORDS), 64, 7000, 1)
    records = build_ruler_qa(corpus, 256, 50, tokenizer, 7256, tokens_to_generate=8)
    for phase in args.phases:
        model = load_model(args.work / phase / "model", "cpu", dtype=torch.float32).eval()
        for name, cut in CUTS.items():
            preds = greedy_generate(model, tokenizer, [cut(r["input"]) for r in records], 6, 16, stop_strings=["\n"])
            right = sum(r["outputs"][0] in pred for r, pred in zip(records, preds, strict=True))
            print(f"{phase}\t{name}\t{right}/{len(records)} right\te.g. {preds[:3]}", file=sys.stdout)


if __name__ == "__main__":
    main()
