"""Edge NMS as HED/RCF prepare predictions (Dollar's convTri, gradient2, edgesNmsMex)."""
from __future__ import annotations

import math

import numpy as np

from pag_model.metrics.boundary_nms import conv_tri, edge_orientation, edges_nms, prepare_edges, quantize_png


def naive_conv_tri(image: np.ndarray, r: int) -> np.ndarray:
    """convTri's MATLAB fallback: padarray 'symmetric' then 'valid' convolutions."""
    f = np.array(list(range(1, r + 1)) + [r + 1] + list(range(r, 0, -1)), dtype=np.float64) / (r + 1) ** 2
    padded = np.pad(image.astype(np.float64), r, mode="symmetric")
    h, w = image.shape
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            window = padded[y:y + 2 * r + 1, x:x + 2 * r + 1]
            out[y, x] = (f[:, None] * f[None, :] * window).sum()
    return out


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


def test_conv_tri_is_the_symmetric_padded_triangle_filter() -> None:
    image = np.random.default_rng(0).random((11, 14)).astype(np.float32)
    np.testing.assert_allclose(conv_tri(image, 4), naive_conv_tri(image, 4), rtol=1e-5, atol=1e-6)


def test_edges_nms_matches_the_mex_loop() -> None:
    rng = np.random.default_rng(1)
    edges = rng.random((16, 21)).astype(np.float32)
    edges[rng.random(edges.shape) < 0.3] = 0
    orientation = rng.uniform(0, math.pi, edges.shape).astype(np.float32)
    ours = edges_nms(edges, orientation)
    reference = naive_edges_nms(edges, orientation, 1, 5, 1.01)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


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


def test_exactly_horizontal_edges_get_orientation_zero_as_in_the_toolbox() -> None:
    # O = atan(Oyy * sign(-Oxy) / (Oxx + 1e-5)): Oxy is exactly 0 here, so O = 0.
    ys, _ = np.mgrid[0:30, 0:30]
    horizontal = np.exp(-((ys - 15.0) ** 2) / 8.0)
    assert np.all(edge_orientation(horizontal) == 0)


def test_blurred_line_is_thinned_to_its_ridge_and_border_faded() -> None:
    ys, xs = np.mgrid[0:40, 0:50]
    blurred = np.exp(-((xs - 25.0) ** 2) / 6.0)
    out = prepare_edges(blurred, nms=True, quantize=False)
    inner = out[6:-6]
    assert (inner[:, 25] > 0.99).all()
    assert (inner[:, :24] == 0).all() and (inner[:, 27:] == 0).all()
    # Rows within 5 px of the border fade linearly: row y keeps y / 5 of the value.
    np.testing.assert_allclose(out[:5, 25], np.arange(5) / 5 * out[20, 25], rtol=1e-5)


def test_quantize_png_rounds_to_8_bits_like_im2uint8() -> None:
    values = np.array([0.0, 0.5 / 255, 0.49 / 255, 0.2, 1.0, 1.2, -0.1])
    expected = np.array([0, 1, 0, 51, 255, 255, 0]) / 255.0
    np.testing.assert_allclose(quantize_png(values), expected, rtol=1e-6)
