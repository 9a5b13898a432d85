"""Furniture for the generated rooms, built from axis-aligned boxes and spheres.

Objects are made of parts, as in the real NYUv2 rooms: tables are a top on four legs,
chairs have thin legs, seat and slatted backs, bookshelves are boards holding rows of books,
windows have frames and mullions, pictures a frame around a canvas, lamps a rod or cord.
Coordinates are the layouts' y-down frame; a `Wall` says where a wall is and which way it
faces, so wall-mounted parts are given as (along the wall, height, distance from the wall).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.datasets.geometry import Box, Plane, Primitive, Sphere


class Builder:
    """Collects primitives and numbers their segments."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes = classes
        self.prims: list[Primitive] = []

    def _cls(self, cls: str) -> int:
        return self.classes.index(cls)

    def plane(self, normal: tuple[float, float, float], offset: float, cls: str, material: str = "") -> None:
        self.prims.append(Plane(np.array(normal, float), offset, self._cls(cls), len(self.prims) + 1, material))

    def box(self, lo: list[float], hi: list[float], cls: str, material: str = "") -> None:
        lo_, hi_ = np.array(lo, float), np.array(hi, float)
        self.prims.append(Box(np.minimum(lo_, hi_), np.maximum(lo_, hi_), self._cls(cls), len(self.prims) + 1, material))

    def sphere(self, centre: list[float], radius: float, cls: str, material: str = "") -> None:
        self.prims.append(Sphere(np.array(centre, float), radius, self._cls(cls), len(self.prims) + 1, material))


@dataclass
class Wall:
    """A wall plane: `axis` (0 = x, 2 = z) at coordinate `at`, facing `inward` (+1 or -1);
    `lo`..`hi` its extent along the other horizontal axis; `floor_y` the floor's y."""

    axis: int
    at: float
    inward: int
    lo: float
    hi: float
    floor_y: float

    def box(self, b: Builder, t: tuple[float, float], height: tuple[float, float], depth: tuple[float, float], cls: str, material: str) -> None:
        """A box along the wall over `t`, between `height` (m above the floor) and `depth` (m from the wall)."""
        lo, hi = np.zeros(3), np.zeros(3)
        tan = 2 - self.axis
        lo[tan], hi[tan] = t
        lo[1], hi[1] = self.floor_y - height[1], self.floor_y - height[0]
        lo[self.axis], hi[self.axis] = self.at + self.inward * depth[0], self.at + self.inward * depth[1]
        b.box(list(lo), list(hi), cls, material)

    def point(self, t: float, height: float, depth: float) -> list[float]:
        p = [0.0, self.floor_y - height, 0.0]
        p[2 - self.axis], p[self.axis] = t, self.at + self.inward * depth
        return p


def table(b: Builder, rng: np.random.Generator, x: float, z: float, w: float, d: float, h: float, floor_y: float) -> float:
    """A top on four legs, centred at (x, z); returns the top's y."""
    top, leg = rng.uniform(0.025, 0.05), rng.uniform(0.03, 0.06)
    y = floor_y - h
    b.box([x - w / 2, y, z - d / 2], [x + w / 2, y + top, z + d / 2], "table", "wood")
    inset = rng.uniform(0.0, 0.06)
    for sx in (-1, 1):
        for sz in (-1, 1):
            cx, cz = x + sx * (w / 2 - inset - leg / 2), z + sz * (d / 2 - inset - leg / 2)
            b.box([cx - leg / 2, y + top, cz - leg / 2], [cx + leg / 2, floor_y, cz + leg / 2], "table", "wood")
    return y


def chair(b: Builder, rng: np.random.Generator, x: float, z: float, back: tuple[int, int], floor_y: float) -> None:
    """Seat, four thin legs and a slatted back on side `back` (unit (dx, dz)), centred at (x, z)."""
    s, seat_h, leg = rng.uniform(0.45, 0.55), rng.uniform(0.42, 0.48), rng.uniform(0.035, 0.05)
    material = "wood" if rng.random() < 0.7 else "metal"
    y = floor_y - seat_h
    b.box([x - s / 2, y, z - s / 2], [x + s / 2, y + 0.05, z + s / 2], "chair", "wood")
    for sx in (-1, 1):
        for sz in (-1, 1):
            cx, cz = x + sx * (s / 2 - leg / 2), z + sz * (s / 2 - leg / 2)
            rear = (sx == back[0] and back[0] != 0) or (sz == back[1] and back[1] != 0)
            top = y - rng.uniform(0.45, 0.55) if rear else y + 0.05
            b.box([cx - leg / 2, top, cz - leg / 2], [cx + leg / 2, floor_y, cz + leg / 2], "chair", material)
    # slats between the rear posts
    bx, bz = x + back[0] * (s / 2 - leg / 2), z + back[1] * (s / 2 - leg / 2)
    half = np.array([leg / 2 if back[0] else s / 2, 0, leg / 2 if back[1] else s / 2])
    for k in range(int(rng.integers(2, 4))):
        yy = y - 0.12 - 0.13 * k
        b.box([bx - half[0], yy - 0.08, bz - half[2]], [bx + half[0], yy, bz + half[2]], "chair", "wood")


def cabinet(b: Builder, rng: np.random.Generator, wall: Wall, t: float, w: float, d: float, h: float) -> None:
    """A body with drawer/door grooves and metal handles."""
    wall.box(b, (t - w / 2, t + w / 2), (0.0, h), (0.0, d), "cabinet", "panels" if rng.random() < 0.8 else "wood")
    rows = int(rng.integers(1, 4))
    for r in range(rows):
        hh = h * (r + 0.5) / rows
        for side in (-1, 1):
            tt = t + side * w * 0.15
            wall.box(b, (tt - 0.05, tt + 0.05), (hh - 0.012, hh + 0.012), (d, d + 0.025), "cabinet", "metal")


def bookshelf(b: Builder, rng: np.random.Generator, wall: Wall, t: float, w: float, d: float, h: float) -> None:
    """Back, sides, shelves (2 cm boards) and runs of books on each shelf."""
    board = 0.02
    wall.box(b, (t - w / 2, t + w / 2), (0.0, h), (0.0, 0.01), "bookshelf", "wood")
    for side in (-1, 1):
        edge = t + side * (w / 2 - board / 2)
        wall.box(b, (edge - board / 2, edge + board / 2), (0.0, h), (0.0, d), "bookshelf", "wood")
    n = int(rng.integers(3, 6))
    levels = np.linspace(0.05, h - board, n + 1)
    for k, lv in enumerate(levels):
        wall.box(b, (t - w / 2 + board, t + w / 2 - board), (lv, lv + board), (0.01, d), "bookshelf", "wood")
        if k == n:
            break
        gap = levels[k + 1] - lv - board
        u = t - w / 2 + board + rng.uniform(0.0, 0.1)
        end = t + w / 2 - board
        while u < end - 0.1:
            run = min(rng.uniform(0.1, 0.5), end - u)
            wall.box(b, (u, u + run), (lv + board, lv + board + gap * rng.uniform(0.6, 0.9)),
                     (0.02 + rng.uniform(0, 0.05), d - rng.uniform(0.0, 0.04)), "otherprop", "spines")
            u += run + rng.uniform(0.03, 0.3)


def door(b: Builder, rng: np.random.Generator, wall: Wall, t: float) -> None:
    """A slab (wood or painted), a casing of three strips, a handle."""
    dw, dh, c = rng.uniform(0.8, 1.0), rng.uniform(1.95, 2.1), rng.uniform(0.05, 0.09)
    material = "wood" if rng.random() < 0.8 else "paint"
    wall.box(b, (t - dw / 2, t + dw / 2), (0.0, dh), (0.0, 0.03), "door", material)
    for side in (-1, 1):
        edge = t + side * (dw / 2 + c / 2)
        wall.box(b, (edge - c / 2, edge + c / 2), (0.0, dh + c), (0.0, 0.02), "door", material)
    wall.box(b, (t - dw / 2 - c, t + dw / 2 + c), (dh, dh + c), (0.0, 0.02), "door", material)
    ht = t + rng.choice([-1, 1]) * (dw / 2 - 0.08)
    wall.box(b, (ht - 0.06, ht + 0.06), (0.98, 1.02), (0.03, 0.08), "door", "metal")


def window(b: Builder, rng: np.random.Generator, wall: Wall, t: float, w: float, low: float, high: float) -> None:
    """A glass pane, frame and mullions (thin bars), maybe curtains on a rod."""
    wall.box(b, (t - w / 2, t + w / 2), (low, high), (0.0, 0.01), "window", "glass")
    f = rng.uniform(0.03, 0.06)
    frame = "paint" if rng.random() < 0.6 else "wood"
    for a, c in ((t - w / 2, t - w / 2 + f), (t + w / 2 - f, t + w / 2), (t - f / 3, t + f / 3)):
        wall.box(b, (a, c), (low, high), (0.0, 0.03), "window", frame)
    for a, c in ((low, low + f), (high - f, high), ((low + high) / 2 - f / 3, (low + high) / 2 + f / 3)):
        wall.box(b, (t - w / 2, t + w / 2), (a, c), (0.0, 0.03), "window", frame)
    if rng.random() < 0.6:
        top = high + rng.uniform(0.05, 0.2)
        wall.box(b, (t - w / 2 - 0.3, t + w / 2 + 0.3), (top, top + 0.025), (0.12, 0.145), "curtain", "metal")
        bottom = rng.uniform(0.02, low)
        for side in (-1, 1):
            cw = rng.uniform(0.25, 0.5)
            a = t - w / 2 - 0.25 if side < 0 else t + w / 2 + 0.25 - cw
            wall.box(b, (a, a + cw), (bottom, top), (0.04, rng.uniform(0.08, 0.12)), "curtain", "folds")


def picture(b: Builder, rng: np.random.Generator, wall: Wall, t: float, w: float, h: float, y: float) -> None:
    """A frame box with a canvas inset, protruding a little further."""
    f = rng.uniform(0.015, 0.06)
    wall.box(b, (t - w / 2, t + w / 2), (y - h / 2, y + h / 2), (0.0, 0.025), "picture", "frame")
    wall.box(b, (t - w / 2 + f, t + w / 2 - f), (y - h / 2 + f, y + h / 2 - f), (0.0, 0.03), "picture", "canvas")


def props(b: Builder, rng: np.random.Generator, x: tuple[float, float], z: tuple[float, float], y: float) -> None:
    """Clutter on a surface at height y (the surface's top): stacked books, cups, boxes."""
    for _ in range(int(rng.integers(1, 4))):
        px, pz = rng.uniform(x[0] + 0.08, x[1] - 0.08), rng.uniform(z[0] + 0.08, z[1] - 0.08)
        kind = rng.random()
        if kind < 0.35:  # a stack of lying books
            yy = y
            for _ in range(int(rng.integers(1, 4))):
                bw, bd, bh = rng.uniform(0.12, 0.22), rng.uniform(0.15, 0.28), rng.uniform(0.015, 0.05)
                b.box([px - bw / 2, yy - bh, pz - bd / 2], [px + bw / 2, yy, pz + bd / 2], "otherprop", "solid")
                yy -= bh
        elif kind < 0.7:  # a cup or a bottle
            r, hh = rng.uniform(0.025, 0.05), rng.uniform(0.06, 0.3)
            b.box([px - r, y - hh, pz - r], [px + r, y, pz + r], "otherprop", "solid")
        else:
            s = rng.uniform(0.04, 0.09)
            b.sphere([px, y - s, pz], s, "otherprop", "solid")


def floor_lamp(b: Builder, rng: np.random.Generator, x: float, z: float, floor_y: float) -> None:
    """A base, a thin rod and a shade."""
    h, r, rod = rng.uniform(1.3, 1.7), rng.uniform(0.2, 0.32), rng.uniform(0.025, 0.045)
    b.box([x - 0.12, floor_y - 0.03, z - 0.12], [x + 0.12, floor_y, z + 0.12], "lamp", "metal")
    b.box([x - rod / 2, floor_y - h, z - rod / 2], [x + rod / 2, floor_y - 0.03, z + rod / 2], "lamp", "metal")
    b.sphere([x, floor_y - h - r * 0.8, z], r, "lamp", "shade")


def hanging_lamp(b: Builder, rng: np.random.Generator, x: float, z: float, ceil_y: float) -> None:
    """A shade on a cord from the ceiling."""
    r, drop = rng.uniform(0.2, 0.35), rng.uniform(0.4, 0.9)
    b.box([x - 0.006, ceil_y, z - 0.006], [x + 0.006, ceil_y + drop, z + 0.006], "lamp", "metal")
    b.sphere([x, ceil_y + drop + r * 0.9, z], r, "lamp", "shade")


def cable(b: Builder, rng: np.random.Generator, start: tuple[float, float], end: tuple[float, float], floor_y: float) -> None:
    """A cable on the floor: two thin straight runs (x then z)."""
    w = rng.uniform(0.008, 0.02)
    (xa, za), (xb, zb) = start, end
    if abs(xb - xa) > w:
        b.box([min(xa, xb), floor_y - w, za - w / 2], [max(xa, xb), floor_y, za + w / 2], "otherprop", "solid")
    if abs(zb - za) > w:
        b.box([xb - w / 2, floor_y - w, min(za, zb)], [xb + w / 2, floor_y, max(za, zb)], "otherprop", "solid")
