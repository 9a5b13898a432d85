"""Morphological thinning to one-pixel-wide lines, as MATLAB `bwmorph(BW, 'thin', Inf)`.

MATLAB documents its 'thin' as the two-subiteration parallel algorithm in Lam, Lee & Suen,
"Thinning Methodologies - A Comprehensive Survey", PAMI 1992, p. 879 (Guo & Hall 1989),
repeated until the image stops changing; the BSDS benchmark thins every thresholded
prediction with it. With the 8 neighbours x1..x8 of a pixel p taken counter-clockwise from
east (x1 = E, x2 = NE, x3 = N, ..., x8 = SE), p is deleted in a subiteration when

- G1: X_H(p) = 1, X_H = sum_{i=1..4} b_i, b_i = 1 iff x_{2i-1} = 0 and (x_{2i} or x_{2i+1})
- G2: 2 <= min(n1, n2) <= 3, n1 = sum_k (x_{2k-1} or x_{2k}), n2 = sum_k (x_{2k} or x_{2k+1})
- G3 (first subiteration): (x2 or x3 or not x8) and x1 = 0;
  G3' (second subiteration): (x6 or x7 or not x4) and x5 = 0

(indices mod 8; pixels outside the image are 0). Deletions within a subiteration are
simultaneous. The conditions are tabulated once per 8-bit neighbourhood code; each
subiteration then re-examines only pixels whose neighbourhood changed, which gives the
same result as re-scanning the whole image.
"""
from __future__ import annotations

import numpy as np

# Bit k of a neighbourhood code is neighbour x_{k+1}: E, NE, N, NW, W, SW, S, SE.
_NEIGHBOURS_YX = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _deletion_tables() -> tuple[np.ndarray, np.ndarray]:
    """(256,) bool tables: delete p in subiteration 1 / 2 given its neighbourhood code."""
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [bool(code >> k & 1) for k in range(8)]
        # x[k] is x_{k+1}; the paper's x_9 is x_1.
        xh = sum(1 for i in (0, 2, 4, 6) if not x[i] and (x[i + 1] or x[(i + 2) % 8]))
        n1 = sum(1 for k in (0, 2, 4, 6) if x[k] or x[k + 1])
        n2 = sum(1 for k in (1, 3, 5, 7) if x[k] or x[(k + 1) % 8])
        g12 = xh == 1 and 2 <= min(n1, n2) <= 3
        g3 = not ((x[1] or x[2] or not x[7]) and x[0])
        g3p = not ((x[5] or x[6] or not x[3]) and x[4])
        first[code] = g12 and g3
        second[code] = g12 and g3p
    return first, second


_TABLES = _deletion_tables()


def thin(mask: np.ndarray) -> np.ndarray:
    """Thin a binary map to one-pixel-wide lines (`bwmorph(mask, 'thin', Inf)`).

    Args:
        mask: (H, W) binary map (bool or 0/1).

    Returns:
        (H, W) bool thinned map.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"thin: expected an (H, W) map, got shape {mask.shape}")
    h, w = mask.shape
    width = w + 2
    # A one-pixel zero frame makes every neighbour lookup valid (outside = background).
    image = np.zeros((h + 2) * width, dtype=np.uint8)
    image.reshape(h + 2, width)[1:-1, 1:-1] = mask != 0
    offsets = np.array([dy * width + dx for dy, dx in _NEIGHBOURS_YX], dtype=np.int64)
    weights = (1 << np.arange(8)).astype(np.int64)
    # Per subiteration, the pixels it must (re-)examine: those whose neighbourhood changed.
    pending = [image.astype(bool), image.astype(bool)]
    step = 0
    while True:
        which = step % 2
        todo = np.flatnonzero(pending[which] & (image == 1))
        pending[which][:] = False
        codes = image[todo[:, None] + offsets] @ weights
        deleted = todo[_TABLES[which][codes]]
        if len(deleted):
            image[deleted] = 0
            touched = (deleted[:, None] + offsets).ravel()
            pending[which][touched] = True
            pending[1 - which][touched] = True
        elif not pending[1 - which].any():
            break  # neither subiteration has anything left to examine: a fixed point
        step += 1
    return image.reshape(h + 2, width)[1:-1, 1:-1].astype(bool)
