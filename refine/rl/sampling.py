"""Next-token sampling for the k-token rollouts, and the log-probabilities of chosen tokens.

REFINE.md §1 step 3 samples at temperature 1 with top-p 1 and top-k 0 (both off); the other
settings exist for ablations and for greedy decoding at evaluation. The filters follow the
order and tie rules of the Hugging Face logits warpers: temperature, then top-k (every token
tied with the k-th largest logit is kept), then top-p (the smallest set of most likely tokens
whose mass reaches top_p; the most likely token is always kept). Everything is computed in
fp32, so a bf16 model samples from the same distribution whose log-probabilities
`token_logprobs` later reports.

`suppress_tokens` (REFINE's rollouts pass the model's EOS ids) are set to -inf before the
filters, as the authors' `min_new_tokens = k` does during the k rollout tokens.
`token_logprobs(logits, tokens, temperature)` divides the logits by the sampling temperature, as
the authors' actor does for the log-probs of the policy loss; the suppressed tokens stay in its
normaliser there too (their actor recomputes log-probs over the full vocabulary).

Deviations from the paper / the authors' code: none in behaviour. The authors sample inside
their rollout engine; here sampling is a pure function of the logits so that the rollout and
the policy loss share one numeric path (the PPO ratio is exactly 1 on-policy).
"""

import torch


def filter_logits(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """Temperature-scaled fp32 logits with tokens outside top-k / top-p set to -inf: [N, V] -> [N, V].

    `temperature` must be > 0 here (greedy decoding never reaches the filters).
    """
    scores = logits.float() / temperature
    if top_k > 0 and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]  # [N, 1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly more likely tokens
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def sample_tokens(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    suppress_tokens: list[int] | tuple[int, ...] | None = None,
) -> torch.Tensor:
    """One token per row: logits [N, V] -> LongTensor [N].

    temperature 0 is greedy (argmax, first index on ties); top_k 0 and top_p 1 switch the
    filters off; `suppress_tokens` (ids) are never drawn.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if suppress_tokens:
        logits = logits.float().index_fill(-1, torch.tensor(list(suppress_tokens), device=logits.device),
                                           float("-inf"))  # fmt: skip
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits, temperature, top_p, top_k), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature)[token] in fp32: logits [..., V], tokens [...] -> [...].

    temperature 0 (greedy rollouts) has no distribution to divide by: it counts as 1."""
    scores = logits.float() if temperature in (0, 1) else logits.float() / temperature
    chosen = scores.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(scores, dim=-1)
