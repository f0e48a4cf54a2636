"""`refine eval longbench` under the paper's protocol, end to end on a tiny Llama: the authors' subset is
selected, prompts are cut as pred.py cuts them, and samsum decodes as pred.py's `model.generate` call."""

import json

import pytest
import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from refine.config import REPO_ROOT, deep_merge
from refine.eval import run as run_module
from refine.eval.longbench import get_task, newline_token_id, official_truncate
from refine.study import validate_config

SIZES = (14, 20, 60)  # context lines per record: the 60-line ones do not fit 400 tokens with max_gen
WORDS = [a + b for a in "bcdfghklmnpr" for b in ("al", "em", "ot", "us", "ix", "ar")]


class _FakeTracker:
    run_id = None

    def __init__(self, *args, **kwargs):
        pass

    def start_run(self, *args, **kwargs):
        pass

    def log_metrics(self, *args, **kwargs):
        pass

    def end_run(self, *args, **kwargs):
        pass


def _context(n: int, seed: int) -> str:
    lines = [f"{WORDS[(seed + i) % 72]}: {WORDS[(3 * i + seed) % 72]} {WORDS[(5 * i) % 72]}" for i in range(n)]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A byte-level BPE tokenizer with a BOS and a newline token, and a tiny random Llama, saved as a model dir."""
    texts = [_context(40, s) for s in range(4)] + [get_task(t).prompt_template for t in ("samsum", "trec")]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<s>", "</s>"])  # fmt: skip
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # make the newline token likely, so the first-token bar and the stop both matter
        model.lm_head.weight[newline_token_id(tokenizer)] += 0.5 * model.lm_head.weight.std() * 40
    path = tmp_path_factory.mktemp("model") / "run" / "model"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_official_protocol_end_to_end(tmp_path, model_dir, monkeypatch):
    source = tmp_path / "longbench"
    source.mkdir()
    for task in ("samsum", "trec"):
        with (source / f"{task}.jsonl").open("w") as handle:
            for i, n in enumerate(SIZES):
                record = {"input": f"{WORDS[i]}:", "context": _context(n, i), "answers": [WORDS[i]],
                          "length": n, "dataset": task, "language": "en", "all_classes": ["bal", "bem"],
                          "_id": f"{task}{i}"}  # fmt: skip
                handle.write(json.dumps(record) + "\n")
    cfg = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    cfg = deep_merge(cfg, {"results_dir": str(tmp_path / "results"), "eval": {"longbench": {
        "source": str(source), "tasks": ["samsum", "trec"], "model_max_length": 400, "max_new_tokens_cap": None,
        "protocol": "official", "max_length": 100, "subset": "fits"}}})  # fmt: skip
    cfg = validate_config(cfg)
    monkeypatch.setattr(run_module, "MLflowTracker", _FakeTracker)
    out = tmp_path / "out"
    run_module.run_eval(cfg, "longbench", model_dir, out)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    tokenizer = run_module.load_tokenizer(model_dir)
    model = run_module.load_model(model_dir, "cpu").eval()
    kept = {row["id"] for row in rows}
    expected_kept = set()
    for task in ("samsum", "trec"):
        for i, n in enumerate(SIZES):
            prompt = get_task(task).format_prompt(_context(n, i), f"{WORDS[i]}:")
            if len(tokenizer(prompt)["input_ids"]) + get_task(task).max_gen <= 400:
                expected_kept.add(f"{task}/{task}{i}")
    assert kept == expected_kept and len(kept) == 4  # the 60-line records are dropped
    newline = newline_token_id(tokenizer)
    truncated = 0
    for row in rows:
        task, rid = row["id"].split("/")
        i = int(rid[len(task) :])
        full = get_task(task).format_prompt(_context(SIZES[i], i), f"{WORDS[i]}:")
        prompt = official_truncate(full, tokenizer, 100)
        truncated += prompt != full
        batch = tokenizer(prompt, return_tensors="pt")
        context = batch["input_ids"].shape[1]
        assert context <= 100 + 2  # BOS inside the 100; the re-tokenised seam may differ by a token
        kwargs = dict(max_new_tokens=get_task(task).max_gen, do_sample=False, pad_token_id=1)
        if task == "samsum":  # LongBench/pred.py's samsum call
            kwargs.update(min_length=context + 1, eos_token_id=[tokenizer.eos_token_id, newline])
        with torch.no_grad():
            output = model.generate(**batch, **kwargs)[0]
        assert row["prediction"] == tokenizer.decode(output[context:], skip_special_tokens=True), row["id"]
    samsum = [row["prediction"] for row in rows if row["id"].startswith("samsum")]
    assert all(pred and not pred.startswith("\n") for pred in samsum)  # the newline is barred first
    assert any(pred.endswith("\n") for pred in samsum)  # ... and ends the generation later, kept as pred.py keeps it
    assert truncated >= 2  # the kept prompts are longer than max_length=100: the cut is exercised
