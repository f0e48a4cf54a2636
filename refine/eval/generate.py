"""Batched greedy decoding and answer log-probabilities for any Hugging Face causal LM with a cache.

``greedy_generate`` left-pads a batch of prompts, runs one prefill forward with ``use_cache=True``
and then feeds one token per step with the returned ``past_key_values``; each row stops at its
first end-of-sequence token (the tokenizer's and the model's ``generation_config`` ids) or stop
string, and the batch stops when every row has. The text of each row is the decoded new tokens
without the end-of-sequence token and cut before the first stop string (Hugging Face's
``stop_strings`` keeps the stop string; evaluation wants the answer only).

``stop_token_ids`` end a row like EOS but are kept in its text (LongBench ``pred.py`` passes the
newline token as an extra ``eos_token_id`` for samsum, and decodes the output with it);
``min_new_tokens`` bars EOS and those ids for the first new tokens, as Hugging Face's
``MinLengthLogitsProcessor`` does for ``min_length = prompt length + min_new_tokens``.

Left padding changes no row: the attention mask hides pads, and models that take ``position_ids``
get positions counted over real tokens only (as ``generate`` computes them), so a batched row equals
the same prompt decoded alone. Models without a ``position_ids`` argument (fla's linear-attention
LMs, which have no positional encoding) read the padding from the attention mask.

``answer_logprob`` scores gold answers for partial credit: the sum over the answer's tokens of
``log p(token | prompt, previous answer tokens)``, one forward per batch. Prompt and answer are
tokenized separately (prompt with the tokenizer's special tokens, answer without) and concatenated,
so the answer tokens are exactly those of ``tokenizer.encode(answer, add_special_tokens=False)``.
``greedy_generate_scored`` does both for partial-credit suites: a one-token answer (every NIAH and
synthetic QA value under the word tokenizer) is scored from the generation's own prefill, so the
prompt is read once, not twice (about 45% of a NIAH evaluation on the default study's DeltaNet).
"""

from __future__ import annotations

import inspect
import logging

import torch
from tqdm import tqdm

from refine.data.tokenizer import continuation_ids

logger = logging.getLogger(__name__)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(value)
    return ids


def _left_pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] token ids and 0/1 attention mask, rows padded on the left to the longest."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def _forward(
    model, ids, mask, positions, takes_positions: bool, use_cache: bool, cache=None, logits_to_keep=0
):
    """One forward; ``position_ids`` only for models whose ``forward`` takes them."""
    kwargs = {"position_ids": positions} if takes_positions else {}
    return model(
        input_ids=ids,
        attention_mask=mask,
        past_key_values=cache,
        use_cache=use_cache,
        logits_to_keep=logits_to_keep,
        **kwargs,
    )


def _pad_id(tokenizer) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return value
    return 0


def greedy_generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    stop_strings: list[str] | None = None,
    stop_token_ids: list[int] | None = None,
    min_new_tokens: int = 0,
) -> list[str]:
    """Greedy continuation of each prompt, at most ``max_new_tokens`` tokens, in batches."""
    texts, _ = _generate(model, tokenizer, prompts, None, max_new_tokens, batch_size, stop_strings,
                         stop_token_ids, min_new_tokens)  # fmt: skip
    return texts


def greedy_generate_scored(
    model,
    tokenizer,
    prompts: list[str],
    answers: list[str],
    max_new_tokens: int,
    batch_size: int,
    stop_strings: list[str] | None = None,
    stop_token_ids: list[int] | None = None,
    min_new_tokens: int = 0,
) -> tuple[list[str], list[float]]:
    """``greedy_generate``'s texts and ``answer_logprob``'s scores of ``answers``, sharing the prefill
    where they can: a batch whose answers are all one token scores them from the prefill's
    last-position logits (the same distribution teacher forcing reads, to float rounding: the
    padded width differs by the answer); any other batch pays ``answer_logprob``'s own forward."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    return _generate(model, tokenizer, prompts, answers, max_new_tokens, batch_size, stop_strings,
                     stop_token_ids, min_new_tokens)  # fmt: skip


@torch.no_grad()
def _generate(model, tokenizer, prompts, answers, max_new_tokens, batch_size, stop_strings, stop_token_ids,
              min_new_tokens) -> tuple[list[str], list[float]]:  # fmt: skip
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} and batch_size={batch_size} must be >= 1")
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"min_new_tokens={min_new_tokens} must be in [0, max_new_tokens={max_new_tokens}]")
    device = next(model.parameters()).device
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    eos, pad_id, stops = _eos_ids(model, tokenizer), _pad_id(tokenizer), list(stop_strings or [])
    stop_ids = set(stop_token_ids or []) - eos
    barred = torch.tensor(sorted(eos | stop_ids), dtype=torch.long, device=device)
    outputs: list[str] = []
    scores: list[float] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", leave=False):
        batch_prompts = prompts[start : start + batch_size]
        encoded = [tokenizer.encode(p) for p in batch_prompts]
        ids, mask = _left_pad(encoded, pad_id, device)  # [B, T]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, T], counted over real tokens
        out = _forward(model, ids, mask, positions, takes_positions, use_cache=True, logits_to_keep=1)
        if answers is not None:
            scores += _batch_answer_scores(model, tokenizer, batch_prompts, answers[start : start + batch_size],
                                           out.logits[:, -1])  # fmt: skip
        new_tokens: list[list[int]] = [[] for _ in encoded]
        texts = [""] * len(encoded)
        done = [False] * len(encoded)
        for step in range(max_new_tokens):
            logits = out.logits[:, -1]  # [B, V]
            if step < min_new_tokens and len(barred):
                logits = logits.index_fill(-1, barred, float("-inf"))
            next_ids = logits.argmax(-1)  # [B]
            for row, token in enumerate(next_ids.tolist()):
                if done[row]:
                    continue
                if token in eos:
                    done[row] = True
                    continue
                new_tokens[row].append(token)
                if token in stop_ids:
                    done[row] = True
                    continue
                if stops:
                    texts[row] = tokenizer.decode(new_tokens[row], skip_special_tokens=True)
                    done[row] = any(s in texts[row] for s in stops)
            if all(done) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(len(encoded), 1)], dim=1)
            positions = positions[:, -1:] + 1
            out = _forward(
                model, next_ids[:, None], mask, positions, takes_positions, True, out.past_key_values
            )
        for tokens in new_tokens:
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            cuts = [text.index(s) for s in stops if s in text]
            outputs.append(text[: min(cuts)] if cuts else text)
    logger.debug("generated %d outputs", len(outputs))
    return outputs, scores


def _batch_answer_scores(model, tokenizer, prompts, answers, last_logits) -> list[float]:
    """Log-probabilities of one batch's answers: from the prefill's last logits [B, V] when every
    answer is one token, else by ``answer_logprob`` (its own teacher-forced forward)."""
    answer_ids = [continuation_ids(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    if any(len(a) != 1 for a in answer_ids):
        return answer_logprob(model, tokenizer, prompts, answers, len(prompts))
    logp = torch.log_softmax(last_logits.to(torch.promote_types(last_logits.dtype, torch.float32)), dim=-1)
    return [logp[row, a[0]].item() for row, a in enumerate(answer_ids)]


@torch.no_grad()
def answer_logprob(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int) -> list[float]:
    """Sum of log-probabilities of each answer's tokens given its prompt (teacher forcing); the
    answer's tokens are those it gets after the prompt (`continuation_ids`)."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    device = next(model.parameters()).device
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    scores: list[float] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="answer logprob", leave=False):
        batch_prompts = prompts[start : start + batch_size]
        batch_answers = [
            continuation_ids(tokenizer, p, a)
            for p, a in zip(batch_prompts, answers[start : start + batch_size], strict=True)
        ]
        if not all(batch_answers):
            raise ValueError(f"an answer in batch starting at {start} has no tokens")
        prompt_ids = [tokenizer.encode(p) for p in batch_prompts]
        if not all(prompt_ids):
            raise ValueError(f"a prompt in batch starting at {start} has no tokens")
        encoded = [p + a for p, a in zip(prompt_ids, batch_answers, strict=True)]
        ids, mask = _left_pad(encoded, _pad_id(tokenizer), device)  # [B, T]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(a) for a in batch_answers) + 1  # left padding: answers end every row
        logits = _forward(model, ids, mask, positions, takes_positions, False, logits_to_keep=keep).logits
        logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))  # [B, keep-1, V]
        targets = ids[:, -(keep - 1) :]  # [B, keep-1], the tokens those logits predict
        token_lp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        for row, answer in enumerate(batch_answers):
            scores.append(token_lp[row, -len(answer) :].sum().item())
    return scores
