"""Procedural materials of the generated scenes: surface colour (albedo) per ray hit.

A primitive names its material (`geometry.Plane/Box/Sphere.material`); several classes share a
material and its per-scene colour (tables, chairs, cabinets and bookshelves are the same wood;
curtains and doors may be the wall's paint; the floor mat is striped fabric on a patterned floor), so
a class is told by its pattern's scale and orientation, its shape and its context rather than
by its colour. Patterns live in surface coordinates (u, v): on a face whose normal is world
axis k, the other two axes measured from the box's minimum corner (from the origin for
planes), so stripes follow objects and their orientation is fixed in the world.

`Palette.draw(rng)` picks a scene's colours; `albedo(...)` evaluates every material on its rays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATERIALS = ("paint", "ceiling", "wood", "panels", "floor", "rug", "folds", "canvas", "frame", "glass",
             "shade", "metal", "solid", "cardboard", "spines")
EMISSIVE = ("glass", "shade")  # lit from inside: no Lambert term, no shadows
FLOOR_PATTERNS = ("planks", "tiles", "carpet")

PAINTS = ((235, 232, 222), (220, 214, 196), (200, 205, 210), (196, 214, 226), (205, 220, 196), (232, 214, 200))
WOODS = ((150, 105, 65), (120, 80, 50), (185, 150, 105), (95, 65, 45), (170, 125, 80))
FABRICS = ((150, 60, 60), (60, 80, 140), (90, 120, 80), (170, 150, 110), (110, 110, 120))


@dataclass
class Palette:
    """One scene's colours (RGB in [0, 1]) and pattern scales (m)."""

    paint: np.ndarray
    ceiling: np.ndarray
    wood: np.ndarray
    floor: np.ndarray
    floor_pattern: str
    floor_period: float
    floor_axis: int  # world axis (0 = x, 2 = z) the planks run along
    curtain: np.ndarray
    rug: np.ndarray
    fold_period: float
    rug_period: float
    seed: int

    @staticmethod
    def draw(rng: np.random.Generator) -> "Palette":
        """Random colours: walls and ceiling from the same paints, one wood for all furniture."""
        jitter = lambda c: np.clip(np.array(c, float) / 255 * rng.uniform(0.85, 1.1, 3), 0, 1)  # noqa: E731
        paint = jitter(PAINTS[rng.integers(len(PAINTS))])
        pattern = FLOOR_PATTERNS[rng.integers(len(FLOOR_PATTERNS))]
        floor_src = WOODS if pattern == "planks" else PAINTS + FABRICS
        return Palette(
            paint=paint,
            ceiling=paint if rng.random() < 0.5 else jitter(PAINTS[0]),
            wood=jitter(WOODS[rng.integers(len(WOODS))]),
            floor=jitter(floor_src[rng.integers(len(floor_src))]),
            floor_pattern=pattern,
            floor_period=rng.uniform(0.12, 0.4),
            floor_axis=int(rng.choice([0, 2])),
            curtain=paint * rng.uniform(0.85, 1.0) if rng.random() < 0.25 else jitter(FABRICS[rng.integers(len(FABRICS))]),
            rug=jitter(FABRICS[rng.integers(len(FABRICS))]),
            fold_period=rng.uniform(0.08, 0.16),
            rug_period=rng.uniform(0.03, 0.07),
            seed=int(rng.integers(1 << 30)),
        )


def hash01(*keys: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) from integer arrays (broadcast)."""
    h = np.int64(0x2545F491)
    for i, k in enumerate(keys):
        h = (h ^ (np.asarray(k, np.int64) * np.int64((0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F)[i % 4]))) & 0xFFFFFFFF
        h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
    return ((h ^ (h >> 13)) & 0xFFFF) / 65536.0


def surface_uv(points: np.ndarray, normals: np.ndarray, lo: np.ndarray, extent: np.ndarray) -> tuple[np.ndarray, ...]:
    """Surface coordinates of hits on axis-aligned faces.

    Args:
        points, normals: (N, 3) hit points and normals (world, y down).
        lo: (N, 3) the hit box's minimum corner (0 for planes and spheres).
        extent: (N, 3) the hit box's size (inf for planes, the diameter for spheres).

    Returns:
        along, across: (N,) coordinates along and across the face's longer tangent axis (the
        grain of wood); horiz: (N,) the horizontal tangent coordinate (x on floors); vert: (N,)
        the vertical one (y on walls, z on floors); face_axis: (N,) the normal's axis.
    """
    face = np.argmax(np.abs(normals), axis=1)
    rel = points - lo
    rows = np.arange(len(points))
    t1 = np.where(face == 0, 2, 0)  # horizontal tangent: z on x-facing faces, else x
    t2 = np.where(face == 1, 2, 1)  # vertical tangent: y, or z on floors and tops
    h, v = rel[rows, t1], rel[rows, t2]
    long_h = extent[rows, t1] >= extent[rows, t2]
    return np.where(long_h, h, v), np.where(long_h, v, h), h, v, face


def _wood(base: np.ndarray, along: np.ndarray, across: np.ndarray, seg: np.ndarray) -> np.ndarray:
    grain = np.sin(2 * np.pi * (across / 0.012 + 0.6 * np.sin(2 * np.pi * along / 0.35 + seg)))
    return base * (1.0 + 0.07 * grain + 0.06 * (hash01(seg, 3) - 0.5))[:, None]


def _floor(p: Palette, pts: np.ndarray) -> np.ndarray:
    along, across = pts[:, p.floor_axis], pts[:, 2 - p.floor_axis]
    if p.floor_pattern == "planks":
        plank = np.floor(across / p.floor_period).astype(np.int64)
        offset = hash01(plank, p.seed) * 2.0
        board = np.floor((along + offset) / 1.2).astype(np.int64)
        gap = (np.abs(across / p.floor_period - np.round(across / p.floor_period)) < 0.04) | (
            np.abs((along + offset) / 1.2 - np.round((along + offset) / 1.2)) < 0.004)
        shade = 0.85 + 0.3 * hash01(plank, board, p.seed) + 0.05 * np.sin(across / 0.004)
        return p.floor * np.where(gap, 0.55, shade)[:, None]
    if p.floor_pattern == "tiles":
        i, j = np.floor(pts[:, 0] / p.floor_period), np.floor(pts[:, 2] / p.floor_period)
        fx, fz = pts[:, 0] / p.floor_period - i, pts[:, 2] / p.floor_period - j
        grout = (np.minimum(fx, 1 - fx) < 0.03) | (np.minimum(fz, 1 - fz) < 0.03)
        shade = 0.9 + 0.2 * hash01(i.astype(np.int64), j.astype(np.int64), p.seed)
        return p.floor * np.where(grout, 0.7, shade)[:, None]
    cells = np.floor(pts[:, [0, 2]] / 0.01).astype(np.int64)  # carpet: fine fibre noise
    return p.floor * (0.85 + 0.3 * hash01(cells[:, 0], cells[:, 1], p.seed))[:, None]


def _rug(p: Palette, across: np.ndarray, h: np.ndarray, v: np.ndarray, extent: np.ndarray, seg: np.ndarray) -> np.ndarray:
    # A fabric colour, striped across the planks' direction at a finer scale, with a border.
    stripe = np.sin(2 * np.pi * (v if p.floor_axis == 0 else h) / p.rug_period) > 0
    border = np.minimum(np.minimum(h, extent[:, 0] - h), np.minimum(v, extent[:, 2] - v)) < 0.06
    shade = np.where(border, 0.6, np.where(stripe, 1.05, 0.8))
    return p.rug * shade[:, None]


def _folds(p: Palette, h: np.ndarray, v: np.ndarray, face: np.ndarray) -> np.ndarray:
    along_wall = np.where(face == 2, h, np.where(face == 0, h, v))
    return p.curtain * (0.78 + 0.22 * np.sin(2 * np.pi * along_wall / p.fold_period))[:, None]


def _panels(base: np.ndarray, h: np.ndarray, v: np.ndarray, extent_h: np.ndarray, extent_v: np.ndarray, seg: np.ndarray) -> np.ndarray:
    # Cabinet fronts: drawers or doors separated by dark grooves.
    rows = 2 + (hash01(seg, 5) * 3).astype(np.int64)
    fy = v / extent_v * rows
    fx = h / extent_h * 2
    groove = (np.abs(fy - np.round(fy)) * extent_v / rows < 0.008) | (np.abs(fx - np.round(fx)) * extent_h / 2 < 0.008)
    return base * np.where(groove, 0.45, 1.0)[:, None]


def _canvas(h: np.ndarray, v: np.ndarray, seg: np.ndarray) -> np.ndarray:
    c1 = np.stack([hash01(seg, k) for k in (11, 12, 13)], -1)
    c2 = np.stack([hash01(seg, k) for k in (14, 15, 16)], -1)
    f = 6 + 20 * hash01(seg, 17)
    mix = 0.5 + 0.5 * np.sin(f * h + 0.7 * f * v * np.sin(f * h * 0.3) + 10 * hash01(seg, 18))
    return c1 * mix[:, None] + c2 * (1 - mix)[:, None]


def _solid(seg: np.ndarray, key: int) -> np.ndarray:
    return 0.1 + 0.8 * np.stack([hash01(seg, key + k) for k in range(3)], -1)


def albedo(
    material: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    lo: np.ndarray,
    extent: np.ndarray,
    segments: np.ndarray,
    palette: Palette,
) -> np.ndarray:
    """(N, 3) surface colour in [0, ~1.2] of each hit.

    Args:
        material: (N,) index into MATERIALS per ray (-1 = no hit: black).
        points, normals: (N, 3) world hit points and unit normals.
        lo, extent: (N, 3) the hit primitive's minimum corner and size (see `surface_uv`).
        segments: (N,) segment ids (per-object colours and phases).
        palette: the scene's colours.
    """
    out = np.zeros_like(points)
    along, across, h, v, face = surface_uv(points, normals, lo, extent)
    rows = np.arange(len(points))
    for m in np.unique(material[material >= 0]):
        name, w = MATERIALS[m], material == m
        seg = segments[w]
        if name == "paint" or name == "ceiling":
            base = palette.paint if name == "paint" else palette.ceiling
            out[w] = base * (1.0 + 0.02 * np.sin(h[w] * 3.1 + v[w] * 2.3))[:, None]
        elif name == "wood":
            out[w] = _wood(palette.wood, along[w], across[w], seg)
        elif name == "panels":
            ext_h = extent[rows[w], np.where(face[w] == 0, 2, 0)]
            ext_v = extent[rows[w], np.where(face[w] == 1, 2, 1)]
            out[w] = _panels(_wood(palette.wood, along[w], across[w], seg), h[w], v[w], ext_h, ext_v, seg)
        elif name == "floor":
            out[w] = _floor(palette, points[w])
        elif name == "rug":
            out[w] = _rug(palette, across[w], h[w], v[w], extent[w], seg)
        elif name == "folds":
            out[w] = _folds(palette, h[w], v[w], face[w])
        elif name == "canvas":
            out[w] = _canvas(h[w], v[w], seg)
        elif name == "frame":
            out[w] = np.where((hash01(seg, 21) < 0.5)[:, None], palette.wood * 0.7, 0.12)
        elif name == "glass":  # the sky through the window: bright, a vertical gradient
            out[w] = np.array([0.75, 0.85, 1.0]) * (1.1 - 0.15 * np.clip(v[w] / 1.5, 0, 1))[:, None]
        elif name == "shade":
            out[w] = np.array([1.0, 0.9, 0.7]) * (0.85 + 0.15 * hash01(seg, 31))[:, None]
        elif name == "metal":
            out[w] = (0.45 + 0.25 * hash01(seg, 41))[:, None] * np.ones(3)
        elif name == "solid":
            out[w] = _solid(seg, 50)
        elif name == "cardboard":
            tape = np.abs(across[w] - 0.5 * np.where(face[w] == 1, extent[rows[w], 0], 0)) < 0.025
            out[w] = np.array([0.62, 0.47, 0.3]) * np.where(tape, 0.8, 1.0)[:, None]
        else:  # spines: a run of books, one colour per book along the shelf
            book = np.floor(h[w] / (0.02 + 0.03 * hash01(seg, 61))).astype(np.int64)
            out[w] = 0.1 + 0.75 * np.stack([hash01(seg, book, 62 + k) for k in range(3)], -1)
    return out
