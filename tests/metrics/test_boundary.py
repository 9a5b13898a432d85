"""BSDS boundary counts and scores: hand-built maps and the benchmark's aggregation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pag_model.metrics import HED_NMS, RCF_NMS, BoundaryMeter, boundary_counts, boundary_scores
from pag_model.metrics.boundary_image import benchmark_thresholds

# The counting tests use 1-px binary maps, which HED's convTri(E, 1) would spread and
# halve (tests/metrics/test_nms.py checks that step): they suppress the map as it is.
UNSMOOTHED = dataclasses.replace(HED_NMS, name="unsmoothed", smooth_radius=0)


def lines_map(shape: tuple[int, int] = (200, 200)) -> np.ndarray:
    """Thinning-invariant boundaries away from the 5-px border band NMS fades."""
    gt = np.zeros(shape, dtype=bool)
    gt[40, 20:180] = True
    gt[120:190, 60] = True
    np.fill_diagonal(gt[60:110, 100:150], True)
    return gt


def test_thresholds_are_the_benchmarks() -> None:
    thresholds = benchmark_thresholds()
    assert len(thresholds) == 99
    np.testing.assert_allclose(thresholds, np.arange(1, 100) / 100, atol=1e-15)


def test_perfect_map_gives_f_one_at_every_threshold() -> None:
    gt = lines_map()
    counts = boundary_counts(gt.astype(np.float64), [gt], nms_reference=UNSMOOTHED)
    n = int(gt.sum())
    np.testing.assert_array_equal(counts, np.tile([n, n, n, n], (99, 1)))
    scores = boundary_scores(counts[None], benchmark_thresholds())
    assert scores["ods_f"] == pytest.approx(1.0)
    assert scores["ois_f"] == pytest.approx(1.0)
    # Every threshold has recall 1: a single recall value, for which the benchmark's AP is 0.
    assert scores["ap"] == 0.0


@pytest.mark.parametrize("shift, expected_f", [(2, 1.0), (3, 0.0)])
def test_shift_within_tolerance_matches_beyond_does_not(shift: int, expected_f: float) -> None:
    # 200 x 200: tolerance 0.0075 x 282.8 = 2.12 px.
    # Each line moves perpendicular to itself by `shift` pixels.
    gt = np.zeros((200, 200), dtype=bool)
    gt[60, 20:180] = True
    gt[100:180, 40] = True
    pred = np.zeros((200, 200))
    pred[60 + shift, 20:180] = 0.8
    pred[100:180, 40 + shift] = 0.8
    counts = boundary_counts(pred, [gt], nms_reference=UNSMOOTHED)
    recall = counts[:, 0] / counts[:, 1]
    precision = counts[:, 2] / np.maximum(counts[:, 3], 1)
    below = benchmark_thresholds() <= 0.8
    np.testing.assert_allclose(recall[below], expected_f)
    np.testing.assert_allclose(precision[below], expected_f)
    # Above the map's value nothing is predicted: recall 0, no predicted pixels.
    assert (counts[~below, 0] == 0).all() and (counts[~below, 3] == 0).all()


def test_precision_is_the_union_and_recall_the_sum_over_annotators() -> None:
    # Annotator A: row 50, cols 50..149 (100 px). Annotator B: row 52, cols 50..99 (50 px)
    # and row 150, cols 50..149 (100 px). Prediction: row 51, cols 50..149 (100 px) and a
    # false segment on row 100, cols 50..99 (50 px). Tolerance 2.12 px.
    a = np.zeros((200, 200), dtype=bool)
    b = np.zeros((200, 200), dtype=bool)
    pred = np.zeros((200, 200))
    a[50, 50:150] = True
    b[52, 50:100] = True
    b[150, 50:150] = True
    pred[51, 50:150] = 1.0
    pred[100, 50:100] = 1.0
    counts = boundary_counts(pred, [a, b], nms=False, quantize=False)
    # A matches all 100 of its pixels, B 50 of its 150: cntR = 150 of sumR = 250.
    # Predicted pixels matched: A's 100 and B's 50 overlap, union = 100 of 150.
    np.testing.assert_array_equal(counts, np.tile([150, 250, 100, 150], (99, 1)))


def test_one_annotated_pixel_matches_one_of_two_predicted() -> None:
    gt = np.zeros((200, 200), dtype=bool)
    gt[100, 100] = True
    pred = np.zeros((200, 200))
    pred[100, 99] = pred[100, 101] = 0.5
    counts = boundary_counts(pred, [gt], thresholds=np.array([0.3]), nms=False, quantize=False)
    np.testing.assert_array_equal(counts, [[1, 1, 1, 2]])


def test_annotator_without_boundaries_adds_nothing_to_recall() -> None:
    gt = lines_map()
    empty = np.zeros_like(gt)
    counts = boundary_counts(gt.astype(np.float64), [gt, empty], nms_reference=UNSMOOTHED)
    n = int(gt.sum())
    np.testing.assert_array_equal(counts[0], [n, n, n, n])


def find_best_rpf(t: np.ndarray, r: np.ndarray, p: np.ndarray) -> tuple[float, float, float, float]:
    """edgesEvalDir.m's findBestRPF, loop for loop."""
    eps = np.finfo(float).eps
    a = np.linspace(0, 1, 100)
    b = 1 - a
    best = (-1.0, 0.0, 0.0, 0.0)
    for j in range(1, len(t)):
        rj = r[j] * a + r[j - 1] * b
        pj = p[j] * a + p[j - 1] * b
        tj = t[j] * a + t[j - 1] * b
        fj = 2 * pj * rj / np.maximum(eps, pj + rj)
        k = int(np.argmax(fj))
        if fj[k] > best[0]:
            best = (fj[k], rj[k], pj[k], tj[k])
    return best[1], best[2], best[0], best[3]


def test_ods_ois_ap_follow_the_benchmark_aggregation() -> None:
    thresholds = np.array([0.25, 0.5, 0.75])
    counts = np.array([
        [[8, 10, 8, 16], [6, 10, 6, 8], [2, 10, 2, 2]],      # F = .615, .667, .333 -> best t2
        [[10, 10, 10, 20], [5, 10, 5, 6], [0, 10, 0, 0]],    # F = .667, .625, 0 -> best t1
    ])
    scores = boundary_scores(counts, thresholds)
    # OIS: counts at each image's best threshold summed: R = 16/20, P = 16/28, F = 2/3.
    assert scores["ois_r"] == pytest.approx(0.8)
    assert scores["ois_p"] == pytest.approx(16 / 28)
    assert scores["ois_f"] == pytest.approx(2 / 3)
    # Dataset curve: R = (.9, .55, .1), P = (.5, 11/14, 1).
    r = np.array([18 / 20, 11 / 20, 2 / 20])
    p = np.array([18 / 36, 11 / 14, 2 / 2])
    ods_r, ods_p, ods_f, ods_t = find_best_rpf(thresholds, r, p)
    assert scores["ods_f"] == pytest.approx(ods_f)
    assert scores["ods_r"] == pytest.approx(ods_r)
    assert scores["ods_p"] == pytest.approx(ods_p)
    assert scores["ods_t"] == pytest.approx(ods_t)
    # Interpolation finds an F above every sampled threshold's F (.643 and .647).
    assert ods_f > 2 * r[1] * p[1] / (r[1] + p[1])
    # AP: P linear in R between (.1, 1), (.55, 11/14), (.9, .5), sampled at R = .10 .. .90.
    total = 0.0
    for k in range(10, 91):
        x = k / 100
        if x <= 0.55:
            total += 1 + (x - 0.1) * (11 / 14 - 1) / 0.45
        else:
            total += 11 / 14 + (x - 0.55) * (0.5 - 11 / 14) / 0.35
    assert scores["ap"] == pytest.approx(total / 100)
    # R50: precision reaches .5 at recall .9.
    assert scores["r50"] == pytest.approx(0.9)


def test_sharded_meters_merge_to_the_single_pass_result() -> None:
    rng = np.random.default_rng(0)
    gt = lines_map((120, 160))
    probs = [np.clip(gt * rng.uniform(0.3, 1.0, gt.shape) + 0.3 * rng.random(gt.shape), 0, 1) for _ in range(3)]
    annotations = [[gt, np.roll(gt, 1, axis=0)] for _ in range(3)]
    single = BoundaryMeter(workers=1)
    single.update(probs, annotations)
    first, second = BoundaryMeter(workers=1), BoundaryMeter(workers=1)
    first.update(probs[:2], annotations[:2])
    second.update(np.stack(probs[2:]), np.stack([np.stack(a) for a in annotations[2:]]))
    merged = BoundaryMeter.from_state(first.state_dict()).merge(BoundaryMeter.from_state(second.state_dict()))
    np.testing.assert_array_equal(merged.counts(), single.counts())
    assert merged.compute() == single.compute()


def test_meter_keeps_its_nms_reference_and_refuses_to_merge_mixed_ones() -> None:
    hed = BoundaryMeter(workers=1)
    assert hed.nms_reference == HED_NMS
    rcf = BoundaryMeter(workers=1, nms_reference=RCF_NMS)
    assert BoundaryMeter.from_state(rcf.state_dict()).nms_reference == RCF_NMS
    with pytest.raises(ValueError, match="prepared maps differently"):
        hed.merge(rcf)
    with pytest.raises(TypeError, match="NmsReference"):
        BoundaryMeter(workers=1, nms_reference="hed")  # type: ignore[arg-type]


def test_pr_curve_and_plot(tmp_path) -> None:
    gt = lines_map()
    meter = BoundaryMeter(workers=1, nms_reference=UNSMOOTHED)
    meter.update([gt * 0.7], [[gt]])
    curve = meter.pr_curve()
    assert set(curve) == {"thresholds", "recall", "precision", "f"}
    assert curve["recall"][0] == 1.0 and curve["recall"][-1] == 0.0
    path = tmp_path / "pr.png"
    meter.plot_pr(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pr.png"]


def test_bad_boundary_inputs_raise_clear_errors() -> None:
    gt = np.zeros((50, 60), dtype=bool)
    gt[20, 10:50] = True
    good = gt.astype(np.float64)
    with pytest.raises(ValueError, match="differs from the prediction"):
        boundary_counts(good, [gt[:, :-1]])
    with pytest.raises(ValueError, match="NaN"):
        boundary_counts(np.where(gt, np.nan, 0.0), [gt])
    with pytest.raises(ValueError, match="no annotator maps"):
        boundary_counts(good, [])
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        boundary_counts(good * 2, [gt])
    with pytest.raises(ValueError, match="binary"):
        boundary_counts(good, [gt * 3])
    with pytest.raises(ValueError, match="no images"):
        BoundaryMeter(workers=1).compute()
    with pytest.raises(ValueError, match="2 images for a batch of 1"):
        BoundaryMeter(workers=1).update([good], [[gt], [gt]])


@pytest.mark.slow
def test_process_pool_gives_the_same_counts_as_in_process() -> None:
    rng = np.random.default_rng(1)
    gt = lines_map((100, 140))
    probs = np.stack([np.clip(gt * 0.9 + 0.2 * rng.random(gt.shape), 0, 1) for _ in range(3)])
    annotations = np.stack([np.stack([gt, np.roll(gt, 2, axis=1)]) for _ in range(3)])
    inline = BoundaryMeter(workers=1)
    inline.update(probs, annotations)
    with BoundaryMeter(workers=2) as pooled:
        pooled.update(probs, annotations)
        np.testing.assert_array_equal(pooled.counts(), inline.counts())
