"""Where REFINE rolls out: per-token entropy, its smoothing, and the choice of rollout starts.

REFINE.md §1 steps 1-2. From one no-grad forward the trainer gets the predictive entropy e_t of
every position; `smooth_entropy` averages it over a centred window of width k (k + 1 if k is
even); `select_positions` splits the admissible part of each row's valid span into c equal chunks
and picks one index t_j per chunk, returning the rollout starts s_j = t_j + 1. The first rollout
token is sampled from the logits at t_j, so e_t scores exactly the prediction the rollout begins
with.

Admissible starts. For a valid span [a, b) of length L (padding may sit on either side; it is
read from `valid_mask`), a start s is admissible when
    s - a >= max(margin, 1)            at least `margin` tokens of prefix, and t = s - 1 is valid,
    b - s >= max(margin, rollout_len)  `margin` tokens to the end and k true tokens to compare with.
`rollout_start_range` gives these bounds relative to a; `RefineConfig.validate_for_length` uses
the same function, so the config check and the selection cannot drift apart.

Chunks. The M admissible indices t are split at a + lo + floor(j * M / c), j = 0..c, so chunk
sizes differ by at most one and every chunk is non-empty when M >= c.

Modes (a `refine.registry.Registry`; a new mode is one decorated function):
    entropy  t_j ~ Categorical(softmax(e over the chunk))   (the authors' default; smoothed e)
    uniform  t_j uniform over the chunk
    argmax   the highest-entropy index of the chunk (first one on ties; raw e)
    argmin   the lowest-entropy index of the chunk (first one on ties; raw e)
`selection_scores(mode, entropy, width, valid_mask)` gives what a mode reads: the smoothed
entropy for `entropy` (and `uniform`, which ignores it), the raw per-token entropy for `argmax`
and `argmin`, as in the authors' release (registered with `raw=True`).

Deviations from the paper / the authors' code:
- The chunks cover only the admissible indices (margins and the k-token room already removed),
  so no chunk can yield an inadmissible start and no draw is thrown away. The authors' exact
  chunking of the margin region is not published; this is the reading that keeps c starts
  always valid.
- `smooth_entropy` optionally takes `valid_mask` and zeroes pad entries first, so entropies of
  pad logits never leak into the average at the span edges (the authors' rows have no padding).
- A span too short for c chunks raises ValueError instead of silently returning fewer starts.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from refine.registry import Registry

SelectionFn = Callable[[torch.Tensor, torch.Tensor, torch.Generator | None], torch.Tensor]
SELECTION_MODES: Registry[SelectionFn] = Registry("selection mode", key="selection")


RAW_ENTROPY_MODES: set[str] = set()  # modes that read the raw, not the smoothed, entropy


def register_selection(name: str, raw: bool = False) -> Callable[[SelectionFn], SelectionFn]:
    """Decorator: make `fn(entropy [B,S], in_chunk bool [B,c,S], generator) -> t [B,c]` a mode.
    `raw`: the mode reads the per-token entropy instead of the smoothed one."""

    def decorate(fn: SelectionFn) -> SelectionFn:
        SELECTION_MODES.add(name, fn, raw=raw)
        if raw:
            RAW_ENTROPY_MODES.add(name)
        return fn

    return decorate


def get_selection(name: str) -> SelectionFn:
    """The selection mode called `name`; ValueError naming the key and the known modes otherwise."""
    return SELECTION_MODES[name]


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) at temperature 1, in fp32: [B, S, V] -> [B, S].

    Uses entr(p) = -p log p with entr(0) = 0, so -inf logits (masked vocabulary) are safe.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.special.entr(probs).sum(dim=-1)


def smooth_entropy(entropy: torch.Tensor, width: int, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Centred moving average with zero padding: [B, S] -> [B, S] (fp32).

    The window has `width` entries, `width + 1` if `width` is even, and always divides by the
    window size (zeros beyond the row, and at pad positions when `valid_mask` [B, S] is given,
    count as zeros).
    """
    if width < 1:
        raise ValueError(f"smoothing width must be >= 1, got {width}")
    window = width if width % 2 == 1 else width + 1
    values = entropy.float()
    if valid_mask is not None:
        values = values.masked_fill(~valid_mask.bool(), 0.0)
    smoothed = F.avg_pool1d(
        values.unsqueeze(1), kernel_size=window, stride=1, padding=window // 2, count_include_pad=True
    )
    return smoothed.squeeze(1)


def selection_scores(
    mode: str, entropy: torch.Tensor, width: int, valid_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """What selection `mode` reads: the raw entropy [B, S] (fp32, pads zeroed) for the modes
    registered `raw`, else `smooth_entropy(entropy, width, valid_mask)`."""
    get_selection(mode)
    if mode not in RAW_ENTROPY_MODES:
        return smooth_entropy(entropy, width, valid_mask)
    values = entropy.float()
    return values if valid_mask is None else values.masked_fill(~valid_mask.bool(), 0.0)


def rollout_start_range(span_len, rollout_len: int, margin: int):
    """First and last admissible rollout start (inclusive), as offsets from the span start.

    `span_len` is an int or a [B] tensor (then `last` is one too). The range is empty
    (first > last) when the span is too short.
    """
    return max(margin, 1), span_len - max(margin, rollout_len)


def _valid_spans(valid_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Start a and length L of each row's contiguous valid span: [B, S] bool -> ([B], [B])."""
    mask = valid_mask.bool()
    length = mask.sum(dim=-1)  # [B]
    start = mask.int().argmax(dim=-1)  # [B] first valid index (0 for an empty row)
    positions = torch.arange(mask.shape[-1], device=mask.device)
    inside = (positions >= start[:, None]) & (positions < (start + length)[:, None])  # [B, S]
    if not torch.equal(inside, mask):
        raise ValueError("valid_mask must mark one contiguous span per row (left or right padding)")
    return start, length


def _chunk_membership(
    valid_mask: torch.Tensor, num_chunks: int, rollout_len: int, margin: int
) -> torch.Tensor:
    """in_chunk[b, j, t]: index t belongs to chunk j of row b. [B, S] -> [B, c, S] bool."""
    start, length = _valid_spans(valid_mask)
    first, last = rollout_start_range(length, rollout_len, margin)  # int, [B]
    num_admissible = last - first + 1  # [B], M per row
    short = num_admissible < num_chunks
    if short.any():
        row = int(short.nonzero()[0])
        raise ValueError(
            f"row {row}: valid span of {int(length[row])} tokens leaves {int(num_admissible[row])} "
            f"admissible rollout starts for num_chunks={num_chunks} (margin={margin}, "
            f"rollout_len={rollout_len}); need at least {num_chunks}"
        )
    lowest_t = start + first - 1  # [B] first admissible t = s - 1
    steps = torch.arange(num_chunks + 1, device=valid_mask.device)
    bounds = lowest_t[:, None] + torch.div(
        steps[None] * num_admissible[:, None], num_chunks, rounding_mode="floor"
    )
    positions = torch.arange(valid_mask.shape[-1], device=valid_mask.device)
    return (positions >= bounds[:, :-1, None]) & (positions < bounds[:, 1:, None])  # [B, c, S]


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One categorical draw per row of [B, c, S] non-negative weights -> [B, c]."""
    flat = weights.reshape(-1, weights.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(weights.shape[:-1])


@register_selection("entropy")
def _select_entropy(entropy, in_chunk, generator):
    scores = entropy.float().unsqueeze(1).masked_fill(~in_chunk, float("-inf"))  # [B, c, S]
    return _draw(torch.softmax(scores, dim=-1), generator)


@register_selection("uniform")
def _select_uniform(entropy, in_chunk, generator):
    return _draw(in_chunk.float(), generator)


@register_selection("argmax", raw=True)
def _select_argmax(entropy, in_chunk, generator):
    return entropy.float().unsqueeze(1).masked_fill(~in_chunk, float("-inf")).argmax(dim=-1)


@register_selection("argmin", raw=True)
def _select_argmin(entropy, in_chunk, generator):
    return entropy.float().unsqueeze(1).masked_fill(~in_chunk, float("inf")).argmin(dim=-1)


def select_positions(
    entropy: torch.Tensor,
    valid_mask: torch.Tensor,
    num_chunks: int,
    rollout_len: int,
    margin: int,
    mode: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rollout starts s_j = t_j + 1, one per chunk: entropy [B, S], valid_mask [B, S] -> [B, c] long.

    No defaults: num_chunks, rollout_len, margin and mode are `RefineConfig`'s num_positions,
    rollout_len, margin and selection (the authors' 8, 5, 20, "entropy" are defined there only).

    `entropy` is whatever score the mode reads (the trainer passes `selection_scores`).
    Indices are absolute in the padded row; x[b, s_j : s_j + rollout_len] is always valid and
    s_j is at least `margin` tokens from both ends of the valid span. Chunks are in order, so
    starts increase along the last dim.
    """
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    if entropy.shape != valid_mask.shape:
        raise ValueError(f"entropy {tuple(entropy.shape)} and valid_mask {tuple(valid_mask.shape)} differ")
    select = get_selection(mode)
    in_chunk = _chunk_membership(valid_mask, num_chunks, rollout_len, margin)
    return select(entropy, in_chunk, generator) + 1
