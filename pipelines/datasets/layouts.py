"""Random scene layouts for the generator: an indoor room and a street, as primitive lists.

Geometry lives in a y-down frame (x right, y down, z forward) with the camera at the origin,
the same axes as a level pinhole camera. Rooms are six inward-facing planes (four walls,
floor, ceiling) furnished with `furniture.py`'s objects: a door, windows with curtains,
pictures, cabinets, bookshelves full of books, tables with chairs and clutter, a floor mat,
lamps, boxes and cables -- many small and thin parts, and classes that share materials.
Streets are a road plane, kerbed sidewalks, buildings, cars and people (boxes) and tree
crowns (spheres), with the sky where nothing is hit. Each primitive gets its own segment id.
"""
from __future__ import annotations

import numpy as np

from pipelines.datasets import furniture
from pipelines.datasets.furniture import Builder, Wall
from pipelines.datasets.geometry import Primitive

ROOM_CLASSES = ("wall", "floor", "ceiling", "cabinet", "table", "door", "lamp", "chair", "bookshelf", "picture",
                "curtain", "floor mat", "window", "otherprop")  # otherprop: books, cups, boxes, cables
STREET_CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car", "person")


class _WallSlots:
    """Free stretches along each wall, so wall-mounted objects do not overlap."""

    def __init__(self, rng: np.random.Generator, walls: list[Wall], near: float) -> None:
        self.rng, self.walls, self.near = rng, walls, near
        self.taken: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(walls))}

    def take(self, width: float) -> tuple[Wall, float] | None:
        """A random wall and centre where `width` fits (None after 30 tries)."""
        for _ in range(30):
            i = int(self.rng.integers(len(self.walls)))
            wall = self.walls[i]
            lo = wall.lo + width / 2 + 0.1
            if wall.axis == 0:  # side walls: in front of the pinhole camera (near = z0 for panoramas)
                lo = max(lo, self.near + width / 2)
            hi = wall.hi - width / 2 - 0.1
            if hi <= lo:
                continue
            t = self.rng.uniform(lo, hi)
            if all(t + width / 2 + 0.05 < a or t - width / 2 - 0.05 > b for a, b in self.taken[i]):
                self.taken[i].append((t - width / 2, t + width / 2))
                return wall, t
        return None


def room(rng: np.random.Generator, panorama: bool) -> tuple[list[Primitive], np.ndarray]:
    """A furnished room around the origin.

    Args:
        rng: the scene's random generator.
        panorama: centre the camera (True) or stand it near the back wall looking in (False).

    Returns:
        The primitives and a point light position (3,).
    """
    b = Builder(ROOM_CLASSES)
    floor_y = rng.uniform(1.2, 1.6)
    ceil_y = floor_y - rng.uniform(2.6, 3.2)
    x0, x1 = -rng.uniform(1.6, 3.2), rng.uniform(1.6, 3.2)
    if panorama:
        z0, z1 = -rng.uniform(1.6, 3.5), rng.uniform(1.6, 3.5)
    else:
        z0, z1 = -rng.uniform(0.3, 1.0), rng.uniform(4.0, 7.0)
    b.plane((1, 0, 0), x0, "wall", "paint")
    b.plane((-1, 0, 0), -x1, "wall", "paint")
    b.plane((0, 0, 1), z0, "wall", "paint")
    b.plane((0, 0, -1), -z1, "wall", "paint")
    b.plane((0, -1, 0), -floor_y, "floor", "floor")
    b.plane((0, 1, 0), ceil_y, "ceiling", "ceiling")
    walls = [Wall(0, x0, 1, z0, z1, floor_y), Wall(0, x1, -1, z0, z1, floor_y), Wall(2, z1, -1, x0, x1, floor_y)]
    if panorama:
        walls.append(Wall(2, z0, 1, x0, x1, floor_y))
    slots = _WallSlots(rng, walls, z0 if panorama else 1.0)
    taken: list[tuple[float, float, float, float]] = []

    def free_spot(half_x: float, half_z: float) -> tuple[float, float] | None:
        # Off the camera (0.9 m away, or ahead for pinhole), off the other free-standing objects.
        xs = (x0 + half_x + 0.05, x1 - half_x - 0.05)
        zs = ((z0 if panorama else 1.5) + half_z + 0.05, z1 - half_z - 0.05)
        if xs[1] <= xs[0] or zs[1] <= zs[0]:
            return None  # does not fit in this room
        for _ in range(40):
            x, z = rng.uniform(*xs), rng.uniform(*zs)
            clear = all(abs(x - tx) > half_x + hx or abs(z - tz) > half_z + hz for tx, tz, hx, hz in taken)
            if clear and (abs(x) > half_x + 0.9 or abs(z) > half_z + 0.9):
                taken.append((x, z, half_x, half_z))
                return x, z
        return None

    slot = slots.take(1.2)
    if slot:
        furniture.door(b, rng, *slot)
    for _ in range(rng.integers(0, 3)):
        w = rng.uniform(0.6, 1.4)
        slot = slots.take(w + 1.2)
        if slot:
            low = rng.uniform(0.7, 1.0)
            furniture.window(b, rng, *slot, w, low, low + rng.uniform(0.9, 1.3))
    for _ in range(rng.integers(1, 4)):
        w, d, h = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.6), rng.uniform(0.5, 2.0)
        slot = slots.take(w)
        if slot:
            furniture.cabinet(b, rng, *slot, w, d, h)
            if h < 1.1 and rng.random() < 0.6:
                wall, t = slot
                furniture.props(b, rng, *_span(wall, t, w, d), wall.floor_y - h)
    for _ in range(rng.integers(1, 3)):
        w = rng.uniform(0.8, 1.5)
        slot = slots.take(w)
        if slot:
            furniture.bookshelf(b, rng, *slot, w, rng.uniform(0.3, 0.45), rng.uniform(1.4, 2.2))
    for _ in range(rng.integers(1, 4)):
        w, h = rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.8)
        slot = slots.take(w)
        if slot:
            furniture.picture(b, rng, *slot, w, h, rng.uniform(1.3, 1.9))
    if rng.random() < 0.75:
        w, d = rng.uniform(1.6, 3.0), rng.uniform(1.2, 2.4)
        x, z = rng.uniform(x0 + w / 2, x1 - w / 2), rng.uniform((z0 if panorama else 1.2) + d / 2, z1 - d / 2)
        b.box([x - w / 2, floor_y - 0.012, z - d / 2], [x + w / 2, floor_y, z + d / 2], "floor mat", "rug")
    for _ in range(rng.integers(1, 3)):
        w, d, h = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.8)
        spot = free_spot(w / 2 + 0.5, d / 2 + 0.5)
        if spot is None:
            continue
        x, z = spot
        top = furniture.table(b, rng, x, z, w, d, h, floor_y)
        furniture.props(b, rng, (x - w / 2, x + w / 2), (z - d / 2, z + d / 2), top)
        if rng.random() < 0.6:
            r = rng.uniform(0.14, 0.22)
            lx, lz = x + rng.uniform(-w / 3, w / 3), z + rng.uniform(-d / 4, d / 4)
            b.box([lx - 0.015, top - 0.3, lz - 0.015], [lx + 0.015, top, lz + 0.015], "lamp", "metal")
            b.sphere([lx, top - 0.3 - r * 0.8, lz], r, "lamp", "shade")
        for side in rng.permutation(4)[: rng.integers(2, 5)]:
            dx, dz = ((1, 0), (-1, 0), (0, 1), (0, -1))[side]
            cx, cz = x + dx * (w / 2 + 0.15), z + dz * (d / 2 + 0.15)
            if dx == 0:
                cx += rng.uniform(-w / 4, w / 4)
            else:
                cz += rng.uniform(-d / 4, d / 4)
            furniture.chair(b, rng, cx, cz, (dx, dz), floor_y)
    for _ in range(rng.integers(1, 3)):
        spot = free_spot(0.3, 0.3)
        if spot:
            furniture.floor_lamp(b, rng, *spot, floor_y)
            wall = walls[int(rng.integers(len(walls)))]
            end = [spot[0], spot[1]]
            end[wall.axis // 2] = wall.at + wall.inward * 0.02
            furniture.cable(b, rng, spot, tuple(end), floor_y)
    for _ in range(rng.integers(1, 4)):
        s = rng.uniform(0.25, 0.55)
        spot = free_spot(s / 2, s / 2)
        if spot:
            x, z = spot
            h = s * rng.uniform(0.6, 1.2)
            b.box([x - s / 2, floor_y - h, z - s / 2], [x + s / 2, floor_y, z + s / 2], "otherprop", "cardboard")
    for _ in range(rng.integers(1, 3)):
        x, z = rng.uniform(x0 + 0.4, x1 - 0.4), rng.uniform((z0 if panorama else 1.5) + 0.4, z1 - 0.4)
        if abs(x) > 0.9 or abs(z) > 0.9:
            furniture.hanging_lamp(b, rng, x, z, ceil_y)
    light = np.array([rng.uniform(0.7 * x0, 0.7 * x1), ceil_y + 0.3, rng.uniform(0.5 * (z0 + z1) - 1, 0.5 * (z0 + z1) + 1)])
    return b.prims, light


def _span(wall: Wall, t: float, w: float, depth: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(x range, z range) of the top of a wall-standing object of width w and depth `depth`."""
    across = tuple(sorted((wall.at, wall.at + wall.inward * depth)))
    along = (t - w / 2, t + w / 2)
    return (across, along) if wall.axis == 0 else (along, across)


def street(rng: np.random.Generator) -> tuple[list[Primitive], np.ndarray]:
    """A street ahead of the camera: road, sidewalks, buildings, cars, people, trees.

    Returns:
        The primitives and a light direction (3,) pointing from the scene to the sun.
    """
    b = Builder(STREET_CLASSES)
    ground = rng.uniform(1.2, 1.6)
    half_road = rng.uniform(4.0, 7.0)
    walk = rng.uniform(2.0, 3.5)
    b.plane((0, -1, 0), -ground, "road")
    b.box([-half_road - walk, ground - 0.15, -5], [-half_road, ground, 300], "sidewalk")
    b.box([half_road, ground - 0.15, -5], [half_road + walk, ground, 300], "sidewalk")
    for side in (-1, 1):
        z = rng.uniform(-2, 4)
        while z < 120:
            length, height, depth = rng.uniform(8, 25), rng.uniform(6, 25), rng.uniform(8, 15)
            inner = half_road + walk + rng.uniform(0.0, 1.5)
            xs = sorted([side * inner, side * (inner + depth)])
            b.box([xs[0], ground - height, z], [xs[1], ground, z + length], "building")
            z += length + rng.uniform(0.0, 4.0)
        for _ in range(rng.integers(1, 4)):
            r = rng.uniform(1.2, 2.5)
            x = side * (half_road + rng.uniform(0.5, walk - 0.3))
            b.sphere([x, ground - rng.uniform(3.0, 4.5), rng.uniform(8, 60)], r, "vegetation")
        for _ in range(rng.integers(0, 3)):
            x = side * (half_road + rng.uniform(0.4, walk - 0.4))
            z = rng.uniform(4, 30)
            b.box([x - 0.25, ground - 0.15 - rng.uniform(1.6, 1.9), z - 0.2], [x + 0.25, ground - 0.15, z + 0.2], "person")
    # The street ends in a building across it, which bounds every depth.
    b.box([-half_road - walk - 20, ground - 30, 125], [half_road + walk + 20, ground, 140], "building")
    for _ in range(rng.integers(1, 5)):
        lane = rng.choice([-1, 1]) * rng.uniform(1.2, half_road - 1.2)
        z = rng.uniform(6, 45)
        b.box([lane - 0.9, ground - rng.uniform(1.4, 1.7), z], [lane + 0.9, ground, z + 4.3], "car")
    sun = np.array([0.4, -1.0, -0.3])
    return b.prims, sun / np.linalg.norm(sun)
