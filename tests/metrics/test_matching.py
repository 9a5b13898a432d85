"""One-to-one boundary pixel matching (BSDS correspondPixels) against brute force."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pag_model.metrics.correspond import candidate_pairs, correspond_pixels, match_pairs, radius_for


def brute_force_best(pred_yx: np.ndarray, gt_yx: np.ndarray, radius: float) -> tuple[int, int]:
    """(most pairs, smallest sum of rint(100 d)) over every one-to-one matching, by enumeration."""
    best = (0, 0)
    n1, n2 = len(pred_yx), len(gt_yx)
    for k in range(1, min(n1, n2) + 1):
        for preds in itertools.combinations(range(n1), k):
            for gts in itertools.permutations(range(n2), k):
                cost = 0
                for p, g in zip(preds, gts):
                    d = math.dist(pred_yx[p], gt_yx[g])
                    if d * d > radius * radius:
                        break
                    cost += int(round(d * 100))
                else:
                    if (k, -cost) > (best[0], -best[1]):
                        best = (k, cost)
    return best


@pytest.mark.parametrize("native", [False, True], ids=["scipy", "compiled"])
@pytest.mark.parametrize("seed", range(12))
def test_matching_is_maximal_then_cheapest_like_brute_force(seed: int, native: bool) -> None:
    rng = np.random.default_rng(seed)
    pred = np.unique(rng.integers(0, 7, size=(int(rng.integers(1, 6)), 2)), axis=0)
    gt = np.unique(rng.integers(0, 7, size=(int(rng.integers(1, 6)), 2)), axis=0)
    radius = 2.3
    i, j, d2 = candidate_pairs(pred, gt, radius)
    pred_to_gt, gt_to_pred = match_pairs(i, j, d2, len(pred), len(gt), native=native)
    pairs = [(p, g) for p, g in enumerate(pred_to_gt) if g >= 0]
    # One-to-one, consistent both ways, and every pair within the radius.
    assert len({g for _, g in pairs}) == len(pairs)
    assert all(gt_to_pred[g] == p for p, g in pairs)
    assert int((gt_to_pred >= 0).sum()) == len(pairs)
    assert all(math.dist(pred[p], gt[g]) <= radius for p, g in pairs)
    cost = sum(int(round(math.dist(pred[p], gt[g]) * 100)) for p, g in pairs)
    assert (len(pairs), cost) == brute_force_best(pred, gt, radius)


@pytest.mark.parametrize("native", [False, True], ids=["scipy", "compiled"])
def test_matching_prefers_more_pairs_over_shorter_ones(native: bool) -> None:
    # p0 could take g0 at distance 0, but then p1 (whose only neighbour is g0) is left out.
    pred = np.array([[0, 0], [0, 3]])
    gt = np.array([[0, 2], [0, 0]])
    i, j, d2 = candidate_pairs(pred, gt, 2.0)
    pred_to_gt, _ = match_pairs(i, j, d2, 2, 2, native=native)
    assert list(pred_to_gt) == [1, 0]


@pytest.mark.parametrize("native", [False, True], ids=["scipy", "compiled"])
def test_cheapest_pixels_win_when_both_sides_have_surplus(native: bool) -> None:
    # p0 (distance 1) and p1 (distance 2) compete for g0; g1 (distance 1) and g2
    # (distance 2) compete for p2: both sides keep an unmatched pixel, the nearer ones match.
    pred = np.array([[10, 10], [10, 13], [30, 30]])
    gt = np.array([[10, 11], [31, 30], [30, 32]])
    i, j, d2 = candidate_pairs(pred, gt, 2.5)
    pred_to_gt, gt_to_pred = match_pairs(i, j, d2, 3, 3, native=native)
    assert list(pred_to_gt) == [0, -1, 1]
    assert list(gt_to_pred) == [0, 2, -1]


@pytest.mark.parametrize("native", [False, True], ids=["scipy", "compiled"])
def test_saturated_sides_pick_the_nearest_partner(native: bool) -> None:
    pred = np.array([[5, 5]])
    gt = np.array([[5, 7], [6, 5]])
    i, j, d2 = candidate_pairs(pred, gt, 2.5)
    assert list(match_pairs(i, j, d2, 1, 2, native=native)[0]) == [1]
    i, j, d2 = candidate_pairs(gt, pred, 2.5)
    assert list(match_pairs(i, j, d2, 2, 1, native=native)[1]) == [1]


def test_two_predicted_pixels_next_to_one_annotated_pixel_give_one_match() -> None:
    pred = np.zeros((200, 200), dtype=bool)
    gt = np.zeros((200, 200), dtype=bool)
    gt[100, 100] = True
    pred[100, 99] = pred[100, 101] = True
    match_pred, match_gt = correspond_pixels(pred, gt)
    assert match_pred.sum() == 1
    assert match_gt.sum() == 1
    assert match_gt[100, 100]


def test_tolerance_is_0_0075_of_the_diagonal() -> None:
    # 200 x 200: diagonal 282.84, tolerance 2.121 px: a shift of 2 matches, 3 does not.
    assert radius_for((200, 200)) == pytest.approx(0.0075 * math.hypot(200, 200))
    gt = np.zeros((200, 200), dtype=bool)
    gt[50, 20:180] = True
    for shift, expected in ((0, 160), (1, 160), (2, 160), (3, 0)):
        pred = np.roll(gt, shift, axis=0)
        match_pred, match_gt = correspond_pixels(pred, gt)
        assert match_pred.sum() == expected, shift
        assert match_gt.sum() == expected, shift
    # Diagonal offset (1, 2): distance sqrt(5) = 2.236 > 2.121; offset (1, 1): 1.414 matches.
    for offset, expected in (((1, 2), 0), ((1, 1), 1)):
        pred = np.zeros((200, 200), dtype=bool)
        single = np.zeros((200, 200), dtype=bool)
        single[100, 100] = True
        pred[100 + offset[0], 100 + offset[1]] = True
        match_pred, _ = correspond_pixels(pred, single)
        assert match_pred.sum() == expected, offset


def test_pixels_exactly_at_the_tolerance_match() -> None:
    # 240 x 320: diagonal 400, tolerance exactly 3 px (the benchmark skips only d^2 > maxDist^2).
    pred = np.zeros((240, 320), dtype=bool)
    gt = np.zeros((240, 320), dtype=bool)
    pred[100, 100] = True
    gt[103, 100] = True
    assert radius_for((240, 320)) == pytest.approx(3.0)
    match_pred, _ = correspond_pixels(pred, gt)
    assert match_pred.sum() == 1


def test_empty_maps_and_shape_mismatch() -> None:
    empty = np.zeros((30, 40), dtype=bool)
    some = empty.copy()
    some[5, 5] = True
    for a, b in ((empty, some), (some, empty), (empty, empty)):
        match_pred, match_gt = correspond_pixels(a, b)
        assert not match_pred.any() and not match_gt.any()
    with pytest.raises(ValueError, match="shape"):
        correspond_pixels(empty, np.zeros((30, 41), dtype=bool))


@pytest.mark.parametrize("native", [False, True], ids=["scipy", "compiled"])
@pytest.mark.parametrize("seed", range(4))
def test_matching_agrees_with_dense_assignment_on_larger_sets(seed: int, native: bool) -> None:
    # Dense Hungarian reference: forbidden pairs cost more than any full set of allowed pairs.
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(100 + seed)
    if seed < 2:
        pred = np.unique(rng.integers(0, 25, size=(60, 2)), axis=0)
        gt = np.unique(rng.integers(0, 25, size=(45, 2)), axis=0)
    else:
        # Boundary-like: a closed curve and a jittered, partly missing copy of it.
        t = np.linspace(0, 2 * np.pi, 900)
        curve = np.stack([60 + 50 * np.sin(t), 90 + 80 * np.cos(3 * t) * 0.5 + 40 * np.cos(t)], 1)
        pred = np.unique(curve.round().astype(int), axis=0)
        jitter = rng.integers(-2, 3, pred.shape)
        gt = np.unique((pred + jitter)[rng.random(len(pred)) < 0.8], axis=0)
    radius = 2.5
    d = np.sqrt(((pred[:, None, :] - gt[None, :, :]) ** 2).sum(-1))
    cost = np.rint(d * 100)
    big = 1e7
    dense = np.where(d * d <= radius * radius, cost, big)
    rows, cols = linear_sum_assignment(dense)
    allowed = dense[rows, cols] < big
    expected = (int(allowed.sum()), int(cost[rows[allowed], cols[allowed]].sum()))
    i, j, d2 = candidate_pairs(pred, gt, radius)
    pred_to_gt, _ = match_pairs(i, j, d2, len(pred), len(gt), native=native)
    hit = pred_to_gt >= 0
    got = (int(hit.sum()), int(cost[np.flatnonzero(hit), pred_to_gt[hit]].sum()))
    assert got == expected
