"""Batched greedy decoding == one-by-one == Hugging Face generate; answer log-probabilities."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from refine.eval import generate as generate_module
from refine.eval.generate import answer_logprob, greedy_generate, greedy_generate_scored

WORDS = "the a cat dog sat ran on under mat tree red blue one two three four five six big small".split()
PROMPTS = [
    "the cat sat on the mat",
    "dog",
    "a big red dog ran under the small blue tree one two",
    "three four five",
    "six small cats",  # "cats" is unknown: [UNK]
]


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="[UNK]"
    )


@pytest.fixture(params=["llama", "gpt2"])
def model(request, tokenizer):
    """Tiny causal LMs with rotary (Llama) and absolute (GPT-2: pads would shift them) positions."""
    torch.manual_seed(1)
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    if request.param == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **ids,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4, **ids)
        model = GPT2LMHeadModel(config)
    return model.double().eval()  # float64: no argmax ties from padding round-off


def _hf_generate(model, tokenizer, prompts, max_new_tokens):
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    texts = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():  # HF keeps a non-special eos token: cut it
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True))
    return texts


def test_batched_equals_one_by_one_equals_hf(model, tokenizer):
    batched = greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    single = greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=1)
    assert batched == single
    assert batched == _hf_generate(model, tokenizer, PROMPTS, 6)
    assert any(batched) and all(len(text.split()) <= 6 for text in batched)


def test_rows_stop_at_their_own_eos(model, tokenizer):
    free = greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=5)
    rows = [text.split() for text in free]  # prefer a stop met mid-row, after a different word
    mid_row = (w for row in rows for i, w in enumerate(row) if i > 0 and w not in row[:i] and w in WORDS)
    stop_word = next(mid_row, rows[0][0])
    model.generation_config.eos_token_id = [2, tokenizer.convert_tokens_to_ids(stop_word)]
    stopped = greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=5)
    for before, after in zip(free, stopped, strict=True):
        words = before.split()
        assert after.split() == (words[: words.index(stop_word)] if stop_word in words else words)
    assert stopped == _hf_generate(model, tokenizer, PROMPTS, 8)
    assert stopped == greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=2)


def test_stop_strings_cut_before_the_stop(model, tokenizer):
    free = greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=5)
    stop = free[2].split()[3]
    cut = greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=5, stop_strings=[stop])
    for before, after in zip(free, cut, strict=True):
        assert after == (before[: before.index(stop)] if stop in before else before)
    assert stop not in cut[2]


def test_answer_logprob_batched_equals_single_and_chain_rule(model, tokenizer):
    answers = ["cat", "two three", "the mat", "six", "red red blue"]
    batched = answer_logprob(model, tokenizer, PROMPTS, answers, batch_size=5)
    single = answer_logprob(model, tokenizer, PROMPTS, answers, batch_size=1)
    assert batched == pytest.approx(single, abs=1e-9)
    assert all(lp < 0 for lp in batched)
    first = answer_logprob(model, tokenizer, [PROMPTS[1]], ["two"], batch_size=1)[0]
    second = answer_logprob(model, tokenizer, [PROMPTS[1] + " two"], ["three"], batch_size=1)[0]
    assert answer_logprob(model, tokenizer, [PROMPTS[1]], ["two three"], batch_size=1)[0] == pytest.approx(
        first + second, abs=1e-9
    )


def test_greedy_token_has_the_highest_answer_logprob(model, tokenizer):
    for prompt in PROMPTS[:3]:
        greedy = greedy_generate(model, tokenizer, [prompt], max_new_tokens=1, batch_size=1)[0]
        scores = answer_logprob(model, tokenizer, [prompt] * len(WORDS), WORDS, batch_size=7)
        if greedy in WORDS:
            assert scores[WORDS.index(greedy)] == pytest.approx(max(scores))
        total = torch.tensor(scores).exp().sum().item()
        assert 0 < total <= 1 + 1e-9  # probabilities of distinct next tokens


def test_scored_generation_equals_generate_and_answer_logprob(model, tokenizer, monkeypatch):
    """One-token answers are scored from the generation's prefill, so the separate forward is skipped;
    a batch with a longer answer falls back to it; texts and scores equal the two separate calls."""
    calls = []
    real = generate_module.answer_logprob
    monkeypatch.setattr(generate_module, "answer_logprob", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    cases = ((["cat", "two", "mat", "six", "red"], False), (["cat", "two three", "mat", "six", "red"], True))
    for answers, fallback in cases:
        texts, scores = greedy_generate_scored(model, tokenizer, PROMPTS, answers, max_new_tokens=4, batch_size=3,
                                               min_new_tokens=1)  # fmt: skip
        assert texts == greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=4, batch_size=3, min_new_tokens=1)
        assert scores == pytest.approx(real(model, tokenizer, PROMPTS, answers, batch_size=5), abs=1e-9)
        assert calls == ([PROMPTS[:3]] if fallback else []), "separate forward only for the multi-token batch"
        calls.clear()
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        greedy_generate_scored(model, tokenizer, PROMPTS[:2], ["cat"], 4, 1)


def test_rejects_bad_arguments(model, tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=0, batch_size=1)
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        answer_logprob(model, tokenizer, PROMPTS[:2], ["cat"], batch_size=1)


def test_stop_token_with_min_new_tokens_equals_hf_min_length(model, tokenizer):
    """LongBench pred.py's samsum call: eos_token_id=[eos, stop], min_length=context_length + 1."""
    free = greedy_generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=5)
    stop_word = free[0].split()[0]  # the first prompt's first new word: barred once, a stop later
    stop_id = tokenizer.convert_tokens_to_ids(stop_word)
    ours = greedy_generate(model, tokenizer, PROMPTS, 8, batch_size=5, stop_token_ids=[stop_id], min_new_tokens=1)
    assert ours == greedy_generate(model, tokenizer, PROMPTS, 8, batch_size=1, stop_token_ids=[stop_id],
                                   min_new_tokens=1)  # fmt: skip
    for prompt, text in zip(PROMPTS, ours, strict=True):  # one prompt at a time, as pred.py runs
        batch = tokenizer(prompt, return_tensors="pt")
        context = batch["input_ids"].shape[1]
        out = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=0, min_length=context + 1,
                             eos_token_id=[tokenizer.eos_token_id, stop_id])[0]  # fmt: skip
        assert text == tokenizer.decode(out[context:], skip_special_tokens=True)
    first = ours[0].split()
    assert first[0] != stop_word  # barred as the first token
    assert stop_word not in first[:-1]  # the row ends at the stop token, which it keeps
    without_min = greedy_generate(model, tokenizer, PROMPTS[:1], 8, batch_size=1, stop_token_ids=[stop_id])
    assert without_min == [stop_word]
