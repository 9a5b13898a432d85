"""Edge NMS as HED (default) and RCF prepare predictions (Dollar's convTri, gradient2, edgesNmsMex).

Oracles: hand-computed filter values, the orientation of ridges derived by hand from the
toolbox formula, and a literal loop-for-loop port of the MATLAB/C++ steps written here
(`naive_nms_process`), independent of the library's vectorised code.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from pag_model.metrics.boundary_nms import (
    HED_NMS,
    RCF_NMS,
    NmsReference,
    conv_tri,
    edge_orientation,
    edges_nms,
    prepare_edges,
    quantize_png,
    reference_nms,
)


def naive_conv_tri(image: np.ndarray, r: float) -> np.ndarray:
    """convTri's MATLAB fallback: `f`, padarray 'symmetric', then 'valid' 2D convolution, in loops."""
    if r <= 1:
        p = 12 / r / (r + 2) - 2
        f = np.array([1, p, 1], dtype=np.float64) / (2 + p)
        r = 1
    else:
        r = int(r)
        f = np.array(list(range(1, r + 1)) + [r + 1] + list(range(r, 0, -1)), dtype=np.float64) / (r + 1) ** 2
    padded = np.pad(image.astype(np.float64), r, mode="symmetric")
    h, w = image.shape
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            total = 0.0
            for i in range(2 * r + 1):
                for j in range(2 * r + 1):
                    total += f[i] * f[j] * padded[y + i, x + j]
            out[y, x] = total
    return out


def naive_gradient2(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """gradient2.m: [Gx, Gy], central differences inside, one-sided on the border."""
    h, w = image.shape
    gx = np.zeros((h, w))
    gy = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            if x == 0:
                gx[y, x] = image[y, 1] - image[y, 0]
            elif x == w - 1:
                gx[y, x] = image[y, w - 1] - image[y, w - 2]
            else:
                gx[y, x] = (image[y, x + 1] - image[y, x - 1]) / 2
            if y == 0:
                gy[y, x] = image[1, x] - image[0, x]
            elif y == h - 1:
                gy[y, x] = image[h - 1, x] - image[h - 2, x]
            else:
                gy[y, x] = (image[y + 1, x] - image[y - 1, x]) / 2
    return gx, gy


def naive_orientation(e: np.ndarray) -> np.ndarray:
    """O = mod(atan(Oyy .* sign(-Oxy) ./ (Oxx + 1e-5)), pi) on gradient2(convTri(E, 4)), per pixel."""
    ox, oy = naive_gradient2(naive_conv_tri(e, 4))
    oxx, _ = naive_gradient2(ox)
    oxy, oyy = naive_gradient2(oy)
    h, w = e.shape
    o = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            sign = int(oxy[y, x] < 0) - int(oxy[y, x] > 0)  # sign(-Oxy)
            o[y, x] = math.atan(oyy[y, x] * sign / (oxx[y, x] + 1e-5)) % math.pi
    return o


def naive_edges_nms(e0: np.ndarray, o: np.ndarray, r: int, s: int, m: float) -> np.ndarray:
    """edgesNmsMex.cpp, loop for loop (x = column, y = row)."""
    h, w = e0.shape

    def interp(x: float, y: float) -> float:
        x = 0 if x < 0 else (w - 1.001 if x > w - 1.001 else x)
        y = 0 if y < 0 else (h - 1.001 if y > h - 1.001 else y)
        x0, y0 = int(x), int(y)
        dx0, dy0 = x - x0, y - y0
        dx1, dy1 = 1 - dx0, 1 - dy0
        return (e0[y0, x0] * dx1 * dy1 + e0[y0, x0 + 1] * dx0 * dy1
                + e0[y0 + 1, x0] * dx1 * dy0 + e0[y0 + 1, x0 + 1] * dx0 * dy0)

    e = e0.astype(np.float64).copy()
    for x in range(w):
        for y in range(h):
            v = e0[y, x]
            if not v:
                continue
            v *= m
            for d in range(-r, r + 1):
                if d and v < interp(x + d * math.cos(o[y, x]), y + d * math.sin(o[y, x])):
                    e[y, x] = 0
                    break
    s = min(s, w // 2, h // 2)
    for x in range(s):
        e[:, x] *= x / s
        e[:, w - 1 - x] *= x / s
    for y in range(s):
        e[y, :] *= y / s
        e[h - 1 - y, :] *= y / s
    return e


def naive_nms_process(x: np.ndarray, smooth: bool, r: int) -> np.ndarray:
    """HED's nms_process.m (smooth=True) / RCF's edge_nms.m (smooth=False), step by step."""
    e = naive_conv_tri(x, 1) if smooth else x.astype(np.float64)
    return naive_edges_nms(e, naive_orientation(e), r, 5, 1.01)


def random_edge_map(seed: int, shape: tuple[int, int] = (17, 23)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    edges = rng.random(shape)
    edges[rng.random(shape) < 0.3] = 0
    return edges.astype(np.float32)


# --- convTri ----------------------------------------------------------------------------

def test_conv_tri_r1_hand_values_centre_and_corner() -> None:
    # r = 1: f = [1 2 1] / 4 along each axis; 16 at the centre spreads as outer(f, f) x 16.
    centre = np.zeros((3, 3), np.float32)
    centre[1, 1] = 16
    np.testing.assert_allclose(conv_tri(centre, 1), [[1, 2, 1], [2, 4, 2], [1, 2, 1]], rtol=1e-6)
    # At the corner the symmetric padding mirrors the pixel itself: column [16 0 0] is
    # padded to [16 16 0 0 0] -> [12 4 0]; then each row the same way.
    corner = np.zeros((3, 3), np.float32)
    corner[0, 0] = 16
    np.testing.assert_allclose(conv_tri(corner, 1), [[9, 3, 0], [3, 1, 0], [0, 0, 0]], rtol=1e-6)


def test_conv_tri_fractional_radius_uses_the_1_p_1_filter() -> None:
    # r = 0.5: p = 12 / 0.5 / 2.5 - 2 = 7.6, f = [1 7.6 1] / 9.6.
    image = np.zeros((3, 3), np.float32)
    image[1, 1] = 9.6**2
    expected = np.array([[1, 7.6, 1], [7.6, 7.6**2, 7.6], [1, 7.6, 1]])
    np.testing.assert_allclose(conv_tri(image, 0.5), expected, rtol=1e-5)


def test_conv_tri_r2_hand_values_on_a_row() -> None:
    # r = 2: f = [1 2 3 2 1] / 9; a constant column direction leaves the row filter alone.
    image = np.tile(np.array([9, 0, 0, 0, 0, 0], np.float32), (5, 1))
    # Row padded symmetrically: [0 9 | 9 0 0 0 0 0 | 0 0] -> x=0: (0 + 18 + 27 + 0 + 0)/9 = 5,
    # x=1: (9 + 18 + 0 + 0 + 0)/9 = 3, x=2: 9/9 = 1, then 0.
    np.testing.assert_allclose(conv_tri(image, 2)[2], [5, 3, 1, 0, 0, 0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("radius", [0.5, 1, 4])
def test_conv_tri_is_the_symmetric_padded_triangle_filter(radius: float) -> None:
    image = random_edge_map(0, (11, 14))
    np.testing.assert_allclose(conv_tri(image, radius), naive_conv_tri(image, radius), rtol=1e-5, atol=1e-6)


def test_conv_tri_radius_zero_is_identity_and_bad_radius_raises() -> None:
    image = random_edge_map(3, (6, 7))
    np.testing.assert_array_equal(conv_tri(image, 0), image)
    with pytest.raises(ValueError, match="integer"):
        conv_tri(image, 2.5)
    with pytest.raises(ValueError, match="smooth_radius"):
        NmsReference(name="bad", smooth_radius=-1)


# --- orientation ------------------------------------------------------------------------

def test_orientation_is_the_edge_normal() -> None:
    ys, xs = np.mgrid[0:40, 0:40].astype(np.float64)
    # Slightly tilted lines; the normal of a near-vertical edge points along x (0 or pi),
    # of a near-horizontal one along y (pi / 2).
    vertical = np.exp(-((xs - 20.0 - 0.05 * ys) ** 2) / 8.0)
    horizontal = np.exp(-((ys - 20.0 - 0.05 * xs) ** 2) / 8.0)
    o_v = edge_orientation(vertical)[10:30, 19:23]
    o_h = edge_orientation(horizontal)[19:23, 10:30]
    assert np.all(np.minimum(o_v, math.pi - o_v) < 0.1)
    assert np.all(np.abs(o_h - math.pi / 2) < 0.1)


@pytest.mark.parametrize("reference", [HED_NMS, RCF_NMS])
def test_diagonal_ridges_get_the_hand_derived_orientation(reference: NmsReference) -> None:
    # E = g(x - y) with a ridge (g'' < 0): Oxx = Oyy = g'', Oxy = -g'', so
    # O = atan(g'' sign(g'') / g'') = atan(-1) mod pi = 3 pi / 4: the normal (1, -1) with y down.
    # E = g(x + y): Oxy = +g'', O = atan(1) = pi / 4. Smoothing with convTri(E, 1) keeps both.
    ys, xs = np.mgrid[0:48, 0:48].astype(np.float64)
    falling = np.exp(-((xs - ys) ** 2) / 8.0)
    rising = np.exp(-((xs + ys - 47.0) ** 2) / 8.0)
    on_falling = (np.abs(xs - ys) <= 1) & (xs > 12) & (xs < 36)
    on_rising = (np.abs(xs + ys - 47) <= 1) & (xs > 12) & (xs < 36)
    o_falling = edge_orientation(conv_tri(falling, reference.smooth_radius))
    o_rising = edge_orientation(conv_tri(rising, reference.smooth_radius))
    np.testing.assert_allclose(o_falling[on_falling], 3 * math.pi / 4, atol=1e-3)
    np.testing.assert_allclose(o_rising[on_rising], math.pi / 4, atol=1e-3)


def test_step_edge_ridge_orientation_and_ramp_orientation() -> None:
    # A vertical step in the image gives a vertical boundary ridge: Oxy = 0 exactly, so
    # sign(-Oxy) = 0 and O = atan(0) = 0, the x axis, which is the ridge's normal.
    step = np.zeros((30, 30))
    step[:, 15] = 1.0
    assert np.all(edge_orientation(step) == 0)
    # A linear ramp has no curvature: Oxx = Oyy = 0 inside, O = atan(0 / 1e-5) = 0.
    ramp = np.tile(np.linspace(0, 1, 30), (30, 1))
    assert np.all(edge_orientation(ramp)[5:-5, 5:-5] == 0)


def test_exactly_horizontal_edges_get_orientation_zero_as_in_the_toolbox() -> None:
    # O = atan(Oyy * sign(-Oxy) / (Oxx + 1e-5)): Oxy is exactly 0 here, so O = 0.
    ys, _ = np.mgrid[0:30, 0:30]
    horizontal = np.exp(-((ys - 15.0) ** 2) / 8.0)
    assert np.all(edge_orientation(horizontal) == 0)


def test_orientation_matches_the_loop_port() -> None:
    edges = conv_tri(random_edge_map(4), 1)
    np.testing.assert_allclose(edge_orientation(edges), naive_orientation(edges), atol=2e-4)


# --- edgesNmsMex and the whole recipes --------------------------------------------------

@pytest.mark.parametrize("radius", [1, 2])
def test_edges_nms_matches_the_mex_loop(radius: int) -> None:
    rng = np.random.default_rng(1)
    edges = random_edge_map(1, (16, 21))
    orientation = rng.uniform(0, math.pi, edges.shape).astype(np.float32)
    ours = edges_nms(edges, orientation, radius, 5, 1.01)
    reference = naive_edges_nms(edges, orientation, radius, 5, 1.01)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [5, 6, 7])
@pytest.mark.parametrize("reference, smooth", [(HED_NMS, True), (RCF_NMS, False)])
def test_reference_nms_matches_the_loop_port_of_the_published_script(
    reference: NmsReference, smooth: bool, seed: int
) -> None:
    edges = random_edge_map(seed)
    expected = naive_nms_process(edges, smooth=smooth, r=reference.nms_radius)
    np.testing.assert_allclose(reference_nms(edges, reference), expected, rtol=1e-5, atol=1e-6)


def test_hed_and_rcf_differ_and_hed_suppresses_the_smoothed_map() -> None:
    edges = random_edge_map(8)
    hed = reference_nms(edges, HED_NMS)
    unsmoothed = reference_nms(edges, dataclasses.replace(HED_NMS, smooth_radius=0))
    assert not np.allclose(hed, unsmoothed)
    # Every surviving HED value is a value of convTri(E, 1) (times the border fade inside).
    smoothed = naive_conv_tri(edges, 1)
    inner = (slice(5, -5), slice(5, -5))
    kept = hed[inner] > 0
    np.testing.assert_allclose(hed[inner][kept], smoothed[inner][kept], rtol=1e-5)


def test_prepare_edges_rounds_where_each_reference_reads_and_writes_png() -> None:
    edges = random_edge_map(9).astype(np.float64)
    # HED reads the float map and writes uint8(E * 255).
    hed = prepare_edges(edges, reference=HED_NMS)
    expected_hed = np.floor(naive_nms_process(edges, smooth=True, r=1) * 255 + 0.5) / 255
    np.testing.assert_allclose(hed, expected_hed, atol=1e-9)
    # RCF reads 8-bit PNGs: the map is rounded before NMS too.
    rcf = prepare_edges(edges, reference=RCF_NMS)
    rounded_in = np.floor(edges * 255 + 0.5) / 255
    expected_rcf = np.floor(naive_nms_process(rounded_in, smooth=False, r=2) * 255 + 0.5) / 255
    np.testing.assert_allclose(rcf, expected_rcf, atol=1e-9)


def test_blurred_line_is_thinned_to_its_ridge_and_border_faded() -> None:
    ys, xs = np.mgrid[0:40, 0:50]
    blurred = np.exp(-((xs - 25.0) ** 2) / 6.0)
    out = prepare_edges(blurred, nms=True, quantize=False)
    inner = out[6:-6]
    # HED smooths first: the ridge keeps (2 * 1 + 2 * exp(-1/6)) / 4 of its height.
    peak = (2 + 2 * math.exp(-1 / 6)) / 4
    np.testing.assert_allclose(inner[:, 25], peak, rtol=1e-5)
    assert (inner[:, :24] == 0).all() and (inner[:, 27:] == 0).all()
    # Rows within 5 px of the border fade linearly: row y keeps y / 5 of the value.
    np.testing.assert_allclose(out[:5, 25], np.arange(5) / 5 * out[20, 25], rtol=1e-5)


def test_quantize_png_rounds_to_8_bits_like_im2uint8() -> None:
    values = np.array([0.0, 0.5 / 255, 0.49 / 255, 0.2, 1.0, 1.2, -0.1])
    expected = np.array([0, 1, 0, 51, 255, 255, 0]) / 255.0
    np.testing.assert_allclose(quantize_png(values), expected, rtol=1e-6)
