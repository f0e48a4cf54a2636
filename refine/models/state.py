"""The one interface REFINE needs from a fast-weight language model: states at positions.

A fast-weight model carries its whole past in a fixed-size state, so one sweep over a
sequence can hand out the state at every selected position, and rollouts can be decoded
from those states without re-encoding the prefix (REFINE.md §6).

    encode(model, input_ids, at)  -> Encoded(hidden [B,S,D], logits [B,S,V], states for B*c rows)
    decode(model, states, tokens) -> Decoded(hidden [N,t,D], logits [N,t,V], states)

Both model families keep their state in fla's `Cache`: one dict per layer whose tensors
are batch-first (DeltaNet: recurrent + short-conv states; LaCT: fast weights, pending
chunk buffers, window KV and per-row counters). A `States` is that list of dicts, detached
from any cache object, so states taken at different positions can be concatenated along
the batch and decoded together.

`encode` splits the batch at the union of all rows' positions and runs the segments one
after another with the carried cache: every token is processed exactly once, in S tokens
of work, whatever the number of positions. With grad enabled the snapshots stay connected
to the graph, so a loss on tokens decoded from them reaches the prefix's fast-weight writes
(REFINE.md §1.6).

Deviation from the authors' release: they re-encode each prefix from scratch (c forwards
per sequence); `reencode_states` keeps that behaviour as the slow reference twin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from fla.models.utils import Cache

States = list[dict[str, Any]]


def map_states(states: States, fn: Callable[[torch.Tensor], torch.Tensor]) -> States:
    """Apply `fn` to every tensor of every layer's state dict (any nesting)."""

    def apply(value):
        if isinstance(value, torch.Tensor):
            return fn(value)
        if isinstance(value, dict):
            return {key: apply(item) for key, item in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(apply(item) for item in value)
        return value

    return [apply(layer) for layer in states]


def zip_states(states: list[States], fn: Callable[[list[torch.Tensor]], torch.Tensor]) -> States:
    """Combine several same-structured States tensor by tensor with `fn(list_of_tensors)`."""

    def combine(values):
        first = values[0]
        if isinstance(first, torch.Tensor):
            return fn(values)
        if isinstance(first, dict):
            return {key: combine([v[key] for v in values]) for key in first}
        if isinstance(first, (tuple, list)):
            return type(first)(combine(list(items)) for items in zip(*values, strict=True))
        return first

    return [combine([s[layer] for s in states]) for layer in range(len(states[0]))]


def cache_to_states(cache: Cache) -> States:
    """The per-layer state dicts of a cache (references, not copies)."""
    return [dict(cache[i]) for i in range(len(cache))]


def states_to_cache(states: States, seen_tokens: int = 0) -> Cache:
    """A fresh fla `Cache` holding `states` (the models replace cached tensors, never write into them).

    The layers are filled directly rather than through `update()`, which only knows fla's own
    state types; `seen_tokens` is informational (no model here reads it for correctness).
    """
    cache = Cache(seen_tokens=seen_tokens)
    for layer_state in states:
        layer = cache.layer_class_to_replicate()
        layer.state = dict(layer_state)
        layer._seen_tokens = seen_tokens
        layer.is_initialized = True
        cache.layers.append(layer)
    return cache


def select_rows(states: States, rows: torch.Tensor) -> States:
    """Rows `rows` (LongTensor [N]) of every state tensor."""
    return map_states(states, lambda t: t.index_select(0, rows.to(t.device)))


def cat_states(states: list[States]) -> States:
    """Concatenate several States along the batch dimension."""
    return zip_states(states, lambda ts: torch.cat(ts, dim=0))


@dataclass
class Encoded:
    """Output of `encode`.

    hidden: [B, S, D] final hidden states (after the final norm: the LM-head input).
    logits: [B, S, V].
    states: the state after consuming input_ids[b, :at[b, j]], rows ordered (b, j): B*c rows.
    """

    hidden: torch.Tensor
    logits: torch.Tensor
    states: States | None


@dataclass
class Decoded:
    """Output of `decode`: hidden [N, t, D], logits [N, t, V], states after the t tokens."""

    hidden: torch.Tensor
    logits: torch.Tensor
    states: States


def _forward(model, input_ids, cache, attention_mask=None):
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        past_key_values=cache,
        use_cache=True,
        output_hidden_states=True,
        return_dict=True,
    )
    return out.hidden_states[-1], out.logits, out.past_key_values


def encode(model, input_ids: torch.Tensor, at: torch.Tensor | None = None) -> Encoded:
    """One sweep over `input_ids` [B, S] that also returns the states at positions `at` [B, c].

    `at[b, j]` = s means "the state after the first s tokens of row b" (1 ≤ s ≤ S). Rows are
    right-padded or unpadded: a causal model's outputs at real tokens do not depend on
    trailing pads, so no attention mask is needed.
    """
    bsz, seq_len = input_ids.shape
    if at is None:
        out = model(input_ids=input_ids, output_hidden_states=True, return_dict=True)
        return Encoded(out.hidden_states[-1], out.logits, None)
    if at.min() < 1 or at.max() > seq_len:
        raise ValueError(f"positions must lie in [1, {seq_len}], got [{int(at.min())}, {int(at.max())}]")
    bounds = sorted(set(at.flatten().tolist()) | {seq_len})
    hiddens, logits, snapshots = [], [], {}
    cache, start = None, 0
    for stop in bounds:
        hidden, logit, cache = _forward(model, input_ids[:, start:stop], cache)
        hiddens.append(hidden)
        logits.append(logit)
        snapshots[stop] = cache_to_states(cache)
        start = stop
    rows = []
    for b in range(bsz):
        for s in at[b].tolist():
            rows.append(select_rows(snapshots[s], torch.tensor([b])))
    return Encoded(torch.cat(hiddens, dim=1), torch.cat(logits, dim=1), cat_states(rows))


def decode(model, states: States, tokens: torch.Tensor) -> Decoded:
    """Feed `tokens` [N, t] to the model starting from `states` (N rows)."""
    hidden, logits, cache = _forward(model, tokens, states_to_cache(states))
    return Decoded(hidden, logits, cache_to_states(cache))


def reencode_states(model, input_ids: torch.Tensor, at: torch.Tensor) -> States:
    """Slow reference twin of `encode`'s states: re-encode every prefix from scratch."""
    rows = []
    for b in range(input_ids.shape[0]):
        for s in at[b].tolist():
            _, _, cache = _forward(model, input_ids[b : b + 1, :s], None)
            rows.append(cache_to_states(cache))
    return cat_states(rows)
