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

`encode` runs one forward over the whole batch and rebuilds the states at the positions
from what that forward recorded (`encode_recorded`, `StateRecord.states_at`): for DeltaNet
(fla's layer on this project's torch backend) the chunked delta rule's chunk-start states
and corrected values plus the short-convolution inputs (refine/models/ops/delta_rule.py
`record_chunks`); for LaCT the fast weights before every chunk, the aligned chunk tokens and
the window keys (`refine.models.lact.modeling_lact.lact_state_at`). The positions can therefore be
chosen after the forward, from its own logits. Models without a recorder (Gated DeltaNet,
fla's Triton kernels) go through `encode_segments`: the batch split at the union of all rows'
positions, the segments run one after another with the carried cache (every token once, but
B*c + 1 small model calls; ~1.7x a plain forward + backward for the tiny DeltaNet at S=2048,
c=8, B=4). Either way, with grad enabled the states stay connected to the graph, so a loss
on tokens decoded from them reaches the prefix's fast-weight writes (REFINE.md §1.6).
`encode_segments` is the path CUDA takes for DeltaNet (fla's Triton kernels have no recorder):
tests/train/test_refine.py forces it on the CPU and checks the REFINE update's positions,
rollouts, rewards, losses and gradients against the record path, and
tests/train/test_triton_interpreter.py (slow) runs it on fla's own kernels under Triton's CPU
interpreter. The LaCT recorder's tape is an object of its own class, not a list, so that it
reaches the layers through FSDP2's and DDP's input handling unchanged.

Deviation from the authors' release: they re-encode each prefix from scratch (c forwards
per sequence); `reencode_states` keeps that behaviour as the slow reference twin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from fla.models.utils import Cache
from fla.modules import ShortConvolution

from refine.models import backend
from refine.models.ops.delta_rule import record_chunks, state_at

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
    logits: [B, S, V], or None when encoded with `logits=False` (the forward then computes the
    logits of the last position only; apply the LM head to `hidden` where they are needed).
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


def _forward(model, input_ids, cache, attention_mask=None, logits=True):
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        past_key_values=cache,
        use_cache=True,
        output_hidden_states=True,
        return_dict=True,
        logits_to_keep=0 if logits else 1,
    )
    return out.hidden_states[-1], out.logits if logits else None, out.past_key_values


def _check_positions(at: torch.Tensor, seq_len: int) -> None:
    if at.min() < 1 or at.max() > seq_len:
        raise ValueError(f"positions must lie in [1, {seq_len}], got [{int(at.min())}, {int(at.max())}]")


def _rows_and_positions(at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """at [B, c] -> (row index, position), each [B*c], rows ordered (b, j)."""
    rows = torch.arange(at.shape[0], device=at.device).repeat_interleave(at.shape[1])
    return rows, at.flatten()


def _model_type(model) -> str:
    return getattr(model.config, "model_type", "")


def can_record(model) -> bool:
    """Whether `encode_recorded` knows how to rebuild this model's states after one forward."""
    if _model_type(model) == "lact":
        return True
    if _model_type(model) != "delta_net" or backend.active_backend() != "torch":
        return False
    return all(type(layer.attn).__name__ == "DeltaNet" for layer in model.model.layers)


class StateRecord:
    """What one forward from the start recorded; `states_at(at)` rebuilds the states at positions."""

    def __init__(self, model, tape: list, conv_inputs: dict, seq_len: int):
        self.model, self.tape, self.conv_inputs, self.seq_len = model, tape, conv_inputs, seq_len
        if len(tape) != len(model.model.layers):
            raise RuntimeError(f"recorded {len(tape)} layers, the model has {len(model.model.layers)}")

    def states_at(self, at: torch.Tensor) -> States:
        """States after input_ids[b, :at[b, j]] for at [B, c], rows ordered (b, j)."""
        _check_positions(at, self.seq_len)
        rows, positions = _rows_and_positions(at)
        cfg = self.model.config
        states = []
        for layer, entry in zip(self.model.model.layers, self.tape, strict=True):
            if _model_type(self.model) == "lact":
                from refine.models.lact import lact_state_at

                recurrent = lact_state_at(entry, rows, positions, cfg.lact_chunk_size, cfg.window_size)
                states.append(_layer_state(recurrent, None))
                continue
            convs = None
            if layer.attn.use_short_conv:
                convs = tuple(
                    _conv_state_at(self.conv_inputs[id(conv)], conv.weight.shape[-1], rows, positions)
                    for conv in (layer.attn.q_conv1d, layer.attn.k_conv1d, layer.attn.v_conv1d)
                )
            states.append(_layer_state(state_at(entry, rows, positions), convs))
        return states


def _layer_state(recurrent, conv) -> dict[str, Any]:
    """One layer of fla's Cache layout."""
    return {"recurrent_state": recurrent, "attn_state": None, "conv_state": conv, "ffn_state": None}


def _conv_state_at(x: torch.Tensor, width: int, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Short-convolution cache [R, D, W] after positions[r] tokens: inputs x[rows[r], s-W : s] of x
    [B, T, D], newest last, zeros before the start (the layout of refine/models/ops/conv.py)."""
    history = torch.cat([x.new_zeros(x.shape[0], width, x.shape[2]), x], dim=1)  # [B, W + T, D]
    index = positions[:, None] + torch.arange(width, device=x.device)  # [R, W]
    return history[rows[:, None], index].transpose(1, 2)


class _Tape:
    """The list a LaCT forward appends its per-layer records to (`state_tape`). Not a `list`: FSDP2
    (and DDP) rebuild list arguments of a forward when they flatten its inputs, so appends to a
    plain list would land in a copy; an object of its own class is passed through as it is."""

    def __init__(self):
        self.entries: list = []

    def append(self, entry) -> None:
        self.entries.append(entry)


def encode_recorded(model, input_ids: torch.Tensor, logits: bool = True) -> tuple[Encoded, StateRecord]:
    """One plain forward over `input_ids` [B, S] (no cache, no padding mask) that records enough to
    rebuild the state at any position afterwards: `record.states_at(at)`. Needs `can_record(model)`.
    `logits=False`: the forward computes no [B, S, V] logits (`Encoded.logits` is None)."""
    keep = 0 if logits else 1
    if not can_record(model):
        raise ValueError(f"no state recorder for model type {_model_type(model)!r} on this backend")
    tape: list = []
    conv_inputs: dict[int, torch.Tensor] = {}
    if _model_type(model) == "lact":
        recorder = _Tape()
        out = model(input_ids=input_ids, output_hidden_states=True, return_dict=True, state_tape=recorder,
                    logits_to_keep=keep)  # fmt: skip
        tape = recorder.entries
    else:

        def keep_input(module, args, kwargs):
            if kwargs.get("cache") is not None or kwargs.get("mask") is not None:
                raise ValueError("encode_recorded: short convolutions must start without cache or mask")
            conv_inputs[id(module)] = kwargs["x"] if "x" in kwargs else args[0]

        layers = model.model.layers
        convs = [m for layer in layers for m in layer.attn.children() if isinstance(m, ShortConvolution)]
        hooks = [m.register_forward_pre_hook(keep_input, with_kwargs=True) for m in convs]
        try:
            with record_chunks() as recorded:
                out = model(input_ids=input_ids, use_cache=False, output_hidden_states=True, return_dict=True,
                            logits_to_keep=keep)  # fmt: skip
        finally:
            for hook in hooks:
                hook.remove()
        tape = recorded
    encoded = Encoded(out.hidden_states[-1], out.logits if logits else None, None)
    return encoded, StateRecord(model, tape, conv_inputs, input_ids.shape[1])


def encode(model, input_ids: torch.Tensor, at: torch.Tensor | None = None, logits: bool = True) -> Encoded:
    """One sweep over `input_ids` [B, S] that also returns the states at positions `at` [B, c].

    `at[b, j]` = s means "the state after the first s tokens of row b" (1 ≤ s ≤ S). Rows are
    right-padded or unpadded: a causal model's outputs at real tokens do not depend on
    trailing pads, so no attention mask is needed. Uses `encode_recorded` when the model has a
    recorder, else `encode_segments`.
    """
    if at is None:
        out = model(input_ids=input_ids, output_hidden_states=True, return_dict=True, logits_to_keep=0 if logits else 1)
        return Encoded(out.hidden_states[-1], out.logits if logits else None, None)
    _check_positions(at, input_ids.shape[1])
    if not can_record(model):
        return encode_segments(model, input_ids, at, logits)
    encoded, record = encode_recorded(model, input_ids, logits)
    return Encoded(encoded.hidden, encoded.logits, record.states_at(at))


def encode_segments(model, input_ids: torch.Tensor, at: torch.Tensor, logits: bool = True) -> Encoded:
    """`encode` for any model with a cache: the batch split at the union of all rows' positions,
    segments run in order with the carried cache; the state rows are gathered in one index per
    snapshot."""
    seq_len = input_ids.shape[1]
    _check_positions(at, seq_len)
    bounds = sorted(set(at.flatten().tolist()) | {seq_len})
    hiddens, pieces, snapshots = [], [], []
    cache, start = None, 0
    for stop in bounds:
        hidden, logit, cache = _forward(model, input_ids[:, start:stop], cache, logits=logits)
        hiddens.append(hidden)
        pieces.append(logit)
        snapshots.append(cache_to_states(cache))
        start = stop
    # stack the snapshots per tensor and pick every (row, position) with one index
    rows, positions = _rows_and_positions(at)
    which = torch.bucketize(positions, torch.tensor(bounds, device=positions.device))  # [B*c]
    states = zip_states(snapshots, lambda ts: torch.stack(ts)[which.to(ts[0].device), rows.to(ts[0].device)])
    return Encoded(torch.cat(hiddens, dim=1), torch.cat(pieces, dim=1) if logits else None, states)


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
