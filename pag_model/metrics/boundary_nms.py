"""Edge non-maximum suppression as the published BSDS evaluations prepare predictions.

The default reference is HED's (Xie & Tu, ICCV 2015): `nms_process.m` of its evaluation
(the NMS section of `eval_edge.m` in the PyTorch HED port), on Dollar's structured-edge
toolbox. It reads each float probability map, smooths it, and suppresses the smoothed map:

    E = convTri(single(x), 1);
    [Ox, Oy] = gradient2(convTri(E, 4));
    [Oxx, ~] = gradient2(Ox);  [Oxy, Oyy] = gradient2(Oy);
    O = mod(atan(Oyy .* sign(-Oxy) ./ (Oxx + 1e-5)), pi);
    E = edgesNmsMex(E, O, 1, 5, 1.01, nThreads);
    imwrite(uint8(E * 255), ...)

RCF (Liu et al., CVPR 2017; `examples/rcf/edge_nms.m`) reads its 8-bit PNGs and skips the
first line: no `convTri(E, 1)`, so orientations come from convTri(E, 4) of the raw map and
the raw map is suppressed, with `edgesNms(E, O, 2, 5, 1.01)` ("2 for BSDS500"). The choice is
a typed argument, an `NmsReference`: `HED_NMS` (the default everywhere) or `RCF_NMS`;
`dataclasses.replace(RCF_NMS, nms_radius=1)` is what this module computed before it
followed HED (RCF's recipe with HED's radius). The smoothing matters: on the same maps,
`HED_NMS` agrees with pyEdgeEval (a published Python port of the benchmark whose `fast_nms`
smooths as HED does) within 0.0004 in ODS, OIS and AP, the unsmoothed NMS is off by about
0.006 in ODS/OIS and 0.03 in AP (`benchmarks/nms_vs_pyedgeeval.py`).

`convTri(I, r)` is a separable triangle filter with symmetric (edge-including mirror)
padding: [1 .. r+1 .. 1] / (r+1)^2 for an integer r >= 1, and [1 p 1] / (2+p) with
p = 12/r/(r+2) - 2 for 0 < r <= 1 (r = 1 gives [1 2 1] / 4). `gradient2` is a central
difference inside and a one-sided difference on the border (numpy.gradient).
`edgesNmsMex` zeroes a pixel when m x its value is below the bilinearly interpolated value
at a distance 1..r along the orientation, then fades values within s = 5 pixels of the
image border linearly to 0. The maps pass through 8-bit files in those pipelines
(`quantize_png`): after NMS in both, before it only in RCF's. Computed in float32 like the
MATLAB/C++ code.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import convolve1d

ORIENTATION_RADIUS = 4


@dataclass(frozen=True)
class NmsReference:
    """One published recipe for thinning a boundary map before the BSDS benchmark.

    Args:
        name: short label, kept in meters' state dicts and logs.
        smooth_radius: convTri radius applied to the map before orientations are computed
            and before suppression (0 = the map is used as it is).
        nms_radius: edgesNmsMex `r`: neighbours at distances 1..r along the orientation.
        border: edgesNmsMex `s`: width of the border band faded linearly to 0.
        multiplier: edgesNmsMex `m`: a pixel survives unless m x value < a neighbour's value.
        png_input: the map is read from an 8-bit PNG, i.e. rounded to 1/255 before NMS.
    """

    name: str
    smooth_radius: float
    nms_radius: int = 1
    border: int = 5
    multiplier: float = 1.01
    png_input: bool = False

    def __post_init__(self) -> None:
        if self.smooth_radius < 0:
            raise ValueError(f"NmsReference {self.name!r}: smooth_radius must be >= 0, got {self.smooth_radius}")
        if self.smooth_radius > 1 and self.smooth_radius != int(self.smooth_radius):
            raise ValueError(
                f"NmsReference {self.name!r}: smooth_radius above 1 must be an integer (convTri), "
                f"got {self.smooth_radius}"
            )
        if self.nms_radius < 1 or self.border < 0 or self.multiplier <= 0:
            raise ValueError(
                f"NmsReference {self.name!r}: expected nms_radius >= 1, border >= 0, multiplier > 0; "
                f"got {self.nms_radius}, {self.border}, {self.multiplier}"
            )

    def as_dict(self) -> dict[str, object]:
        """Plain data for state dicts."""
        return {
            "name": self.name,
            "smooth_radius": self.smooth_radius,
            "nms_radius": self.nms_radius,
            "border": self.border,
            "multiplier": self.multiplier,
            "png_input": self.png_input,
        }


HED_NMS = NmsReference(name="hed", smooth_radius=1, nms_radius=1, png_input=False)
RCF_NMS = NmsReference(name="rcf", smooth_radius=0, nms_radius=2, png_input=True)


def quantize_png(prob: np.ndarray) -> np.ndarray:
    """Round a map in [0, 1] to multiples of 1/255 (float64), as `uint8(x*255)` + `double(imread)/255`."""
    levels = np.floor(np.clip(prob, 0.0, 1.0) * 255.0 + 0.5)
    return levels / 255.0


def triangle_kernel(radius: float) -> np.ndarray:
    """convTri's 1D filter (float32): [1 p 1]/(2+p) for 0 < r <= 1, else [1..r+1..1]/(r+1)^2."""
    if radius <= 0:
        raise ValueError(f"triangle_kernel: expected a radius > 0, got {radius}")
    if radius <= 1:
        p = 12.0 / radius / (radius + 2.0) - 2.0
        return (np.array([1.0, p, 1.0]) / (2.0 + p)).astype(np.float32)
    if radius != int(radius):
        raise ValueError(f"triangle_kernel: a radius above 1 must be an integer, got {radius}")
    r = int(radius)
    ramp = np.arange(1, r + 2, dtype=np.float64)
    return (np.concatenate([ramp, ramp[-2::-1]]) / (r + 1) ** 2).astype(np.float32)


def conv_tri(image: np.ndarray, radius: float) -> np.ndarray:
    """`convTri(I, r)` of an (H, W) map: separable triangle filter, symmetric padding; r = 0 is a copy."""
    image = np.asarray(image, dtype=np.float32)
    if radius == 0:
        return image.copy()
    kernel = triangle_kernel(radius)
    # scipy's "reflect" (d c b a | a b c d | d c b a) is MATLAB's padarray 'symmetric'.
    out = convolve1d(image, kernel, axis=0, mode="reflect")
    return convolve1d(out, kernel, axis=1, mode="reflect")


def edge_orientation(edges: np.ndarray) -> np.ndarray:
    """(H, W) edge normal orientation in [0, pi) from second derivatives of convTri(E, 4)."""
    smooth = conv_tri(edges, ORIENTATION_RADIUS)
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
    radius: int = 1,
    border: int = 5,
    multiplier: float = 1.01,
) -> np.ndarray:
    """`edgesNmsMex(E, O, r, s, m)`: suppress non-maxima along the orientation.

    Args:
        edges: (H, W) float edge map.
        orientation: (H, W) orientation in radians (x to the right, y down).
        radius: neighbours at distances 1..radius on both sides are compared.
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


def reference_nms(edges: np.ndarray, reference: NmsReference = HED_NMS) -> np.ndarray:
    """A reference's smoothing, orientation and edgesNmsMex on an (H, W) map; float32 (H, W)."""
    smoothed = conv_tri(edges, reference.smooth_radius)
    orientation = edge_orientation(smoothed)
    return edges_nms(smoothed, orientation, reference.nms_radius, reference.border, reference.multiplier)


def prepare_edges(
    prob: np.ndarray,
    nms: bool = True,
    quantize: bool = True,
    reference: NmsReference = HED_NMS,
) -> np.ndarray:
    """A map as the reference's evaluation thresholds it: (8-bit input), NMS, 8-bit output.

    Args:
        prob: (H, W) boundary probabilities in [0, 1].
        nms: apply the reference's non-maximum suppression.
        quantize: round to 1/255 where the reference's files do (after NMS; also before it
            when the reference reads PNGs).
        reference: which published NMS to follow; HED's by default.

    Returns:
        (H, W) float map the thresholds are applied to.
    """
    if quantize and (reference.png_input or not nms):
        edges = quantize_png(prob)
    else:
        edges = np.asarray(prob, dtype=np.float32)
    if nms:
        edges = reference_nms(edges, reference)
        if quantize:
            edges = quantize_png(edges)
    return edges
