"""Greedy decoding from the states one pass leaves at the selected positions vs `model.generate` (issue 12).

The same prompts for every variant: the prefixes x[:s_j] of B = `decode_batch_size` random sequences at the c
positions the project's entropy selection picks on the initial model (B*c prompts of different
lengths), each continued greedily by `decode_new_tokens` tokens, EOS never chosen (the rollouts'
`mask_eos`; `min_new_tokens` for the others), fp32, no grad:

- `from_states`: one recorded forward over the B sequences (`encode_recorded`), the state at every
  start rebuilt from it (`states_at`), then all B*c rows decoded together token by token from those
  states (`rollout_from_states` at temperature 0) -- what REFINE's rollouts and TTT do;
- `greedy_generate`: the evaluation's batched greedy decoder (`refine.eval.generate`), which
  encodes each left-padded prompt with fla's cache and carries the cache token by token;
- `hf_generate`: `model.generate(do_sample=False)` with fla's cache on the same left-padded batch.

Ratios are `hf_generate`'s median over each variant's (the speed-up; target >= 2 for
`from_states`); tokens/s counts generated tokens. The three must produce the same tokens
(greedy, same weights): the fraction that agree with `hf_generate` is logged, not asserted here
(tests/test_bench.py asserts it).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from refine.bench.measure import Samples
from refine.bench.trl_grpo import ids_to_text, word_tokenizer
from refine.eval.generate import greedy_generate
from refine.models.registry import build_model
from refine.models.state import can_record, encode, encode_recorded
from refine.rl.config import RefineConfig
from refine.train.chunked import output_head
from refine.train.refine import RefineMethod, rollout_from_states

log = logging.getLogger(__name__)


@torch.no_grad()
def decode_from_states(model, ids: torch.Tensor, starts: torch.Tensor, cfg: RefineConfig) -> torch.Tensor:
    """ids [B, S], starts [B, c] -> greedy tokens [B*c, cfg.rollout_len] decoded from one pass's states."""
    if can_record(model):
        enc, record = encode_recorded(model, ids, logits=False)
        states = record.states_at(starts)
    else:
        enc = encode(model, ids, at=starts, logits=False)
        states = enc.states
    rows = torch.arange(ids.shape[0]).repeat_interleave(starts.shape[1])
    first_logits = output_head(model)(enc.hidden[rows, starts.flatten() - 1])  # [B*c, V]
    return rollout_from_states(model, states, first_logits, cfg).tokens


def _left_padded(prompts: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :], mask[i, width - len(p) :] = p, 1
    return ids, mask


@torch.no_grad()
def hf_generate(model, prompts: list[torch.Tensor], new_tokens: int, pad_id: int) -> torch.Tensor:
    ids, mask = _left_padded(prompts, pad_id)
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=False, use_cache=True, pad_token_id=pad_id,
    )  # fmt: skip
    return out[:, ids.shape[1] :]


def bench_decode(bench, arch: str) -> list[dict]:
    """The `decode` rows of one architecture (`bench`: a `refine.bench.BenchConfig`)."""
    torch.manual_seed(bench.seed)
    model = build_model(arch, bench.vocab_size, bench.overrides.get(arch)).eval()
    n_new = bench.decode_new_tokens
    cfg = RefineConfig(**bench.refine_fields())
    cfg.validate_for_length(bench.seq_len)
    ids = torch.randint(0, bench.vocab_size, (bench.decode_batch_size, bench.seq_len))
    with torch.no_grad():
        _, _, starts = RefineMethod(cfg).score_and_select(model, ids, torch.ones_like(ids, dtype=torch.bool))
    greedy = replace(cfg, temperature=0.0, rollout_len=n_new)
    prompts = [ids[b, :s] for b in range(ids.shape[0]) for s in starts[b].tolist()]
    eos = model.config.eos_token_id
    tokenizer = word_tokenizer(bench.vocab_size, eos)
    texts = [ids_to_text(p) for p in prompts]
    variants = {
        "from_states": lambda: decode_from_states(model, ids, starts, greedy),
        "greedy_generate": lambda: greedy_generate(
            model, tokenizer, texts, n_new, batch_size=len(texts), min_new_tokens=n_new
        ),
        "hf_generate": lambda: hf_generate(model, prompts, n_new, eos),
    }
    samples = {name: Samples() for name in variants}
    outputs = {}
    for round_ in range(bench.repeats + 1):  # round 0 is warm-up
        for name, fn in variants.items():
            outputs[name] = samples[name].time(fn, count=round_ > 0)
        last = {n: round(s.times[-1], 3) for n, s in samples.items() if s.times}
        log.info("decode %s round %d: %s", arch, round_, last)
    reference = outputs["hf_generate"]
    generated = [tokenizer.convert_tokens_to_ids(text.split()) for text in outputs["greedy_generate"]]
    as_ids = {
        "from_states": outputs["from_states"],
        "greedy_generate": torch.tensor(generated),
        "hf_generate": reference,
    }
    for name, tokens in as_ids.items():
        log.info("decode %s: %s agrees with hf_generate on %.3f of the tokens", arch, name,
                 float((tokens == reference).float().mean()) if tokens.shape == reference.shape else 0.0)  # fmt: skip
    hf = samples["hf_generate"].summary()["median_s"]
    rows = []
    for name, s in samples.items():
        summary = s.summary()
        rows.append(
            {
                "measurement": "decode",
                "arch": arch,
                "variant": name,
                "seq_len": bench.seq_len,
                "batch_size": bench.decode_batch_size,
                "num_positions": cfg.num_positions,
                "rollout_len": n_new,
                "num_rollouts": 1,
                "mini_batches": 1,
                **summary,
                "tokens_per_s": len(prompts) * n_new / summary["median_s"],
                "ratio": hf / summary["median_s"],
                "ratio_to": "hf_generate (speed-up)",
            }
        )
    return rows
