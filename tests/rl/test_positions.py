"""Entropy, smoothing and rollout-start selection (refine/rl/positions.py)."""

import math

import pytest
import torch

from refine.rl.positions import (
    SELECTION_MODES,
    get_selection,
    rollout_start_range,
    select_positions,
    selection_scores,
    smooth_entropy,
    token_entropy,
)


def test_token_entropy_uniform_and_one_hot():
    logits = torch.zeros(1, 2, 4)
    logits[0, 1] = torch.tensor([0.0, float("-inf"), float("-inf"), float("-inf")])
    ent = token_entropy(logits)
    assert ent.shape == (1, 2) and ent.dtype == torch.float32
    torch.testing.assert_close(ent, torch.tensor([[math.log(4), 0.0]]))


def test_token_entropy_two_way_by_hand():
    p = torch.tensor([0.25, 0.75])
    ent = token_entropy(p.log().view(1, 1, 2).to(torch.bfloat16))
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert abs(ent.item() - expected) < 1e-2


def test_smooth_entropy_odd_width_zero_padding():
    e = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    torch.testing.assert_close(smooth_entropy(e, 3), torch.tensor([[1.0, 2.0, 3.0, 4.0, 3.0]]))


def test_smooth_entropy_even_width_becomes_next_odd():
    e = torch.tensor([[5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    # width 4 -> 5: the spike spreads over indices 0..2, each 5 / 5
    torch.testing.assert_close(smooth_entropy(e, 4), torch.tensor([[1.0, 1.0, 1.0, 0, 0, 0, 0]]))
    torch.testing.assert_close(smooth_entropy(e, 4), smooth_entropy(e, 5))


def test_smooth_entropy_width_one_is_identity_and_mask_zeroes_pads():
    e = torch.tensor([[9.0, 1.0, 2.0, 3.0]])
    assert torch.equal(smooth_entropy(e, 1), e)
    valid = torch.tensor([[False, True, True, True]])
    torch.testing.assert_close(smooth_entropy(e, 3, valid), torch.tensor([[1.0 / 3, 1.0, 2.0, 5.0 / 3]]))


def test_rollout_start_range():
    assert rollout_start_range(100, 5, 20) == (20, 80)
    assert rollout_start_range(100, 30, 20) == (20, 70)  # k > margin: k tokens of truth needed
    assert rollout_start_range(10, 3, 0) == (1, 7)  # t = s - 1 must exist


def test_argmax_argmin_pick_per_chunk_extremes():
    # S = 12, margin 2, k = 2: admissible s in [2, 10], t in [1, 9], M = 9, c = 3 -> t chunks
    # [1,2,3] [4,5,6] [7,8,9]
    e = torch.tensor([[0.0, 5, 1, 2, 0, 9, 4, 3, 1, 7, 0, 0]])
    valid = torch.ones(1, 12, dtype=torch.bool)
    top = select_positions(e, valid, num_chunks=3, rollout_len=2, margin=2, mode="argmax")
    low = select_positions(e, valid, num_chunks=3, rollout_len=2, margin=2, mode="argmin")
    assert top.tolist() == [[1 + 1, 5 + 1, 9 + 1]]
    assert low.tolist() == [[2 + 1, 4 + 1, 8 + 1]]
    assert top.dtype == torch.long


def test_chunk_boundaries_uneven_split():
    # S = 10, margin 1, k = 1: s in [1, 9], t in [0, 8], M = 9, c = 4 -> bounds 0, 2, 4, 6, 9
    valid = torch.ones(1, 10, dtype=torch.bool)
    for j, (lo, hi) in enumerate([(0, 2), (2, 4), (4, 6), (6, 9)]):
        e = torch.zeros(1, 10)
        e[0, lo:hi] = 1.0  # the chunk's own indices are its maxima
        e[0, hi - 1] = 2.0
        starts = select_positions(e, valid, num_chunks=4, rollout_len=1, margin=1, mode="argmax")
        assert starts[0, j].item() == hi  # t = hi - 1
        e_low = -e
        e_low[0, lo] = -3.0
        starts = select_positions(e_low, valid, num_chunks=4, rollout_len=1, margin=1, mode="argmin")
        assert starts[0, j].item() == lo + 1


def test_uniform_covers_exactly_the_chunk():
    valid = torch.ones(2000, 10, dtype=torch.bool)
    starts = select_positions(torch.zeros(2000, 10), valid, 4, rollout_len=1, margin=1, mode="uniform")
    for j, (lo, hi) in enumerate([(0, 2), (2, 4), (4, 6), (6, 9)]):
        assert set((starts[:, j] - 1).tolist()) == set(range(lo, hi))


def test_entropy_mode_follows_softmax():
    # one chunk of t in {1, 2, 3} (S = 6, margin 2, k = 2): s in [2, 4]
    rows = 20000
    e = torch.tensor([0.0, 0.0, 1.0, 2.0, 0.0, 0.0]).expand(rows, 6)
    valid = torch.ones(rows, 6, dtype=torch.bool)
    gen = torch.Generator().manual_seed(3)
    starts = select_positions(e, valid, 1, rollout_len=2, margin=2, mode="entropy", generator=gen)
    freq = torch.bincount(starts[:, 0] - 1, minlength=6)[1:4].float() / rows
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), dim=0)
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


def test_seeded_generator_is_deterministic():
    e = torch.rand(4, 200)
    valid = torch.ones(4, 200, dtype=torch.bool)
    runs = [
        select_positions(e, valid, 8, 5, 20, "entropy", generator=torch.Generator().manual_seed(11))
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    other = select_positions(e, valid, 8, 5, 20, "entropy", generator=torch.Generator().manual_seed(12))
    assert not torch.equal(runs[0], other)


@pytest.mark.parametrize("mode", sorted(SELECTION_MODES))
@pytest.mark.parametrize("side", ["left", "right"])
def test_margins_and_padding_respected(mode, side):
    S, pad, margin, k, c = 120, 30, 10, 12, 6
    valid = torch.ones(3, S, dtype=torch.bool)
    if side == "left":
        valid[:, :pad] = False
    else:
        valid[:, S - pad :] = False
    # pads carry the highest entropy: a mode that strays onto them would pick them
    e = torch.rand(3, S).masked_fill(~valid, 100.0)
    if mode == "argmin":
        e = e.masked_fill(~valid, -100.0)
    starts = select_positions(e, valid, c, rollout_len=k, margin=margin, mode=mode)
    a = pad if side == "left" else 0
    b = a + S - pad
    assert starts.shape == (3, c)
    assert (starts - a >= margin).all() and (b - starts >= max(margin, k)).all()
    assert valid.gather(1, starts - 1).all()  # t_j valid
    assert (starts[:, 1:] > starts[:, :-1]).all()  # one per chunk, in order
    for offset in range(k):
        assert valid.gather(1, starts + offset).all()  # true continuation exists


def test_span_too_short_raises():
    valid = torch.ones(1, 30, dtype=torch.bool)
    # s in [10, 20]: 11 admissible starts
    select_positions(torch.zeros(1, 30), valid, 11, rollout_len=5, margin=10, mode="entropy")
    with pytest.raises(ValueError, match="num_chunks=12"):
        select_positions(torch.zeros(1, 30), valid, 12, rollout_len=5, margin=10, mode="entropy")


def test_non_contiguous_mask_and_unknown_mode_raise():
    valid = torch.ones(1, 30, dtype=torch.bool)
    valid[0, 15] = False
    with pytest.raises(ValueError, match="contiguous"):
        select_positions(torch.zeros(1, 30), valid, 2, rollout_len=1, margin=1, mode="entropy")
    with pytest.raises(ValueError, match="argmax"):
        get_selection("topk")


def test_selection_scores_raw_for_argmax_argmin_smoothed_otherwise():
    entropy = torch.rand(2, 40)
    valid = torch.ones(2, 40, dtype=torch.bool)
    valid[1, 35:] = False
    smoothed = smooth_entropy(entropy, 5, valid)
    for mode in ("entropy", "uniform"):
        torch.testing.assert_close(selection_scores(mode, entropy, 5, valid), smoothed)
    for mode in ("argmax", "argmin"):
        torch.testing.assert_close(selection_scores(mode, entropy, 5, valid), entropy.masked_fill(~valid, 0.0))
    with pytest.raises(ValueError, match="unknown selection mode"):
        selection_scores("top", entropy, 5, valid)
