"""Edge non-maximum suppression as the HED/RCF evaluations prepare predictions.

HED (Xie & Tu, ICCV 2015) and RCF evaluate on BSDS500 after thinning each probability map
with Dollar's structured-edge toolbox (`edgesDetect.m` / `nms_process.m`):

    [Ox, Oy] = gradient2(convTri(E, 4));
    [Oxx, ~] = gradient2(Ox);  [Oxy, Oyy] = gradient2(Oy);
    O = mod(atan(Oyy .* sign(-Oxy) ./ (Oxx + 1e-5)), pi);
    E = edgesNmsMex(E, O, 1, 5, 1.01, nThreads);

`convTri(I, r)` is a separable triangle filter [1 .. r+1 .. 1] / (r+1)^2 with symmetric
(edge-including mirror) padding; `gradient2` is a central difference inside and a one-sided
difference on the border (numpy.gradient). `edgesNmsMex` zeroes a pixel when 1.01 x its
value is below the bilinearly interpolated value at distance 1 along the orientation,
then fades values within s = 5 pixels of the image border linearly to 0. The maps pass
through 8-bit PNG files before and after this step in those pipelines; `quantize_png`
reproduces that rounding. Computed in float32 like the MATLAB/C++ code.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve1d

SMOOTH_RADIUS = 4
NMS_RADIUS = 1
BORDER = 5
MULTIPLIER = 1.01


def quantize_png(prob: np.ndarray) -> np.ndarray:
    """Round a map in [0, 1] to multiples of 1/255 (float64), as `im2uint8` + `double(imread)/255`."""
    levels = np.floor(np.clip(prob, 0.0, 1.0) * 255.0 + 0.5)
    return levels / 255.0


def conv_tri(image: np.ndarray, radius: int) -> np.ndarray:
    """Triangle-filter smoothing `convTri(I, r)` for integer r >= 1 (symmetric padding)."""
    if radius < 1:
        raise ValueError(f"conv_tri: expected an integer radius >= 1, got {radius}")
    ramp = np.arange(1, radius + 2, dtype=np.float32)
    kernel = np.concatenate([ramp, ramp[-2::-1]]) / np.float32((radius + 1) ** 2)
    # scipy's "reflect" (d c b a | a b c d | d c b a) is MATLAB's padarray 'symmetric'.
    out = convolve1d(image, kernel, axis=0, mode="reflect")
    return convolve1d(out, kernel, axis=1, mode="reflect")


def edge_orientation(edges: np.ndarray) -> np.ndarray:
    """(H, W) edge normal orientation in [0, pi) from second derivatives of the smoothed map."""
    smooth = conv_tri(edges.astype(np.float32), SMOOTH_RADIUS)
    oy, ox = np.gradient(smooth)
    oxx = np.gradient(ox, axis=1)
    oyy, oxy = np.gradient(oy)
    return np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + np.float32(1e-5))), np.pi).astype(np.float32)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`interp` of edgesNmsMex: clamp into the image, then bilinear interpolation."""
    h, w = image.shape
    x = np.clip(x, 0, np.float32(w - 1.001))
    y = np.clip(y, 0, np.float32(h - 1.001))
    x0 = x.astype(np.int64)
    y0 = y.astype(np.int64)
    dx0 = x - x0
    dy0 = y - y0
    dx1 = 1 - dx0
    dy1 = 1 - dy0
    return (
        image[y0, x0] * dx1 * dy1
        + image[y0, x0 + 1] * dx0 * dy1
        + image[y0 + 1, x0] * dx1 * dy0
        + image[y0 + 1, x0 + 1] * dx0 * dy0
    )


def edges_nms(
    edges: np.ndarray,
    orientation: np.ndarray,
    radius: int = NMS_RADIUS,
    border: int = BORDER,
    multiplier: float = MULTIPLIER,
) -> np.ndarray:
    """`edgesNmsMex(E, O, r, s, m)`: suppress non-maxima along the orientation.

    Args:
        edges: (H, W) float edge map.
        orientation: (H, W) orientation in radians (x to the right, y down).
        radius: distance (pixels) of the compared neighbours.
        border: width of the border band faded to zero.
        multiplier: a pixel survives unless multiplier x value < a neighbour's value.

    Returns:
        (H, W) float32 suppressed map.
    """
    edges = edges.astype(np.float32)
    out = edges.copy()
    ys, xs = np.nonzero(edges)
    xf = xs.astype(np.float32)
    yf = ys.astype(np.float32)
    value = edges[ys, xs] * np.float32(multiplier)
    cos_o = np.cos(orientation[ys, xs]).astype(np.float32)
    sin_o = np.sin(orientation[ys, xs]).astype(np.float32)
    suppressed = np.zeros(len(ys), dtype=bool)
    for d in range(-radius, radius + 1):
        if d == 0:
            continue
        neighbour = _bilinear(edges, xf + np.float32(d) * cos_o, yf + np.float32(d) * sin_o)
        suppressed |= value < neighbour
    out[ys[suppressed], xs[suppressed]] = 0
    h, w = edges.shape
    s = min(border, w // 2, h // 2)
    fade = np.arange(s, dtype=np.float32) / np.float32(s) if s > 0 else np.zeros(0, np.float32)
    # Same order as the C++ loops: columns first, then rows.
    out[:, :s] *= fade[None, :]
    out[:, w - s:] *= fade[None, ::-1]
    out[:s, :] *= fade[:, None]
    out[h - s:, :] *= fade[::-1, None]
    return out


def prepare_edges(prob: np.ndarray, nms: bool = True, quantize: bool = True) -> np.ndarray:
    """The HED/RCF preparation: (8-bit rounding), orientation, NMS, (8-bit rounding).

    Args:
        prob: (H, W) boundary probabilities in [0, 1].
        nms: apply non-maximum suppression.
        quantize: round to 1/255 before and after NMS, as the PNG files in the pipeline do.

    Returns:
        (H, W) float map the thresholds are applied to.
    """
    edges = quantize_png(prob) if quantize else prob.astype(np.float32)
    if nms:
        edges = edges_nms(edges, edge_orientation(edges))
        if quantize:
            edges = quantize_png(edges)
    return edges
