"""Random scene layouts for the generator: an indoor room and a street, as primitive lists.

Geometry lives in a y-down frame (x right, y down, z forward) with the camera at the origin,
the same axes as a level pinhole camera. Rooms are six inward-facing planes (four walls,
floor, ceiling) with cabinets, tables, a door (boxes) and lamps (spheres); streets are a
road plane, kerbed sidewalks, buildings, cars and people (boxes) and tree crowns (spheres),
with the sky where nothing is hit. Each primitive gets its own segment id (1, 2, ...).
"""
from __future__ import annotations

import numpy as np

from pipelines.datasets.geometry import Box, Plane, Primitive, Sphere

ROOM_CLASSES = ("wall", "floor", "ceiling", "cabinet", "table", "door", "lamp")
STREET_CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car", "person")


class _Builder:
    """Collects primitives and numbers their segments."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes = classes
        self.prims: list[Primitive] = []

    def plane(self, normal: tuple[float, float, float], offset: float, cls: str) -> None:
        self.prims.append(Plane(np.array(normal, float), offset, self.classes.index(cls), len(self.prims) + 1))

    def box(self, lo: list[float], hi: list[float], cls: str) -> None:
        self.prims.append(Box(np.array(lo, float), np.array(hi, float), self.classes.index(cls), len(self.prims) + 1))

    def sphere(self, centre: list[float], radius: float, cls: str) -> None:
        self.prims.append(Sphere(np.array(centre, float), radius, self.classes.index(cls), len(self.prims) + 1))


def room(rng: np.random.Generator, panorama: bool) -> tuple[list[Primitive], np.ndarray]:
    """A furnished room around the origin.

    Args:
        rng: the scene's random generator.
        panorama: centre the camera (True) or stand it near the back wall looking in (False).

    Returns:
        The primitives and a point light position (3,).
    """
    b = _Builder(ROOM_CLASSES)
    floor_y = rng.uniform(1.2, 1.6)
    ceil_y = floor_y - rng.uniform(2.6, 3.2)
    x0, x1 = -rng.uniform(1.6, 3.2), rng.uniform(1.6, 3.2)
    if panorama:
        z0, z1 = -rng.uniform(1.6, 3.5), rng.uniform(1.6, 3.5)
    else:
        z0, z1 = -rng.uniform(0.3, 1.0), rng.uniform(4.0, 7.0)
    b.plane((1, 0, 0), x0, "wall")
    b.plane((-1, 0, 0), -x1, "wall")
    b.plane((0, 0, 1), z0, "wall")
    b.plane((0, 0, -1), -z1, "wall")
    b.plane((0, -1, 0), -floor_y, "floor")
    b.plane((0, 1, 0), ceil_y, "ceiling")

    def free_spot(half_x: float, half_z: float) -> tuple[float, float]:
        # Keep furniture off the camera: at least 0.9 m away (pano) or ahead (pinhole).
        for _ in range(50):
            x = rng.uniform(x0 + half_x + 0.05, x1 - half_x - 0.05)
            z = rng.uniform((z0 if panorama else 1.5) + half_z + 0.05, z1 - half_z - 0.05)
            if abs(x) > half_x + 0.9 or abs(z) > half_z + 0.9:
                return x, z
        return x1 - half_x - 0.05, z1 - half_z - 0.05

    # Door on the far wall (or a side wall), protruding 3 cm.
    dw, dh = rng.uniform(0.8, 1.0), rng.uniform(1.9, 2.1)
    dx = rng.uniform(x0 + dw / 2 + 0.2, x1 - dw / 2 - 0.2)
    b.box([dx - dw / 2, floor_y - dh, z1 - 0.03], [dx + dw / 2, floor_y, z1], "door")
    # Cabinets against the side walls.
    for _ in range(rng.integers(1, 3)):
        w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.4, 0.6), rng.uniform(0.8, 2.0)
        z = rng.uniform((z0 if panorama else 1.0) + w / 2 + 0.1, z1 - w / 2 - 0.1)
        if rng.random() < 0.5:
            b.box([x0, floor_y - h, z - w / 2], [x0 + d, floor_y, z + w / 2], "cabinet")
        else:
            b.box([x1 - d, floor_y - h, z - w / 2], [x1, floor_y, z + w / 2], "cabinet")
    # Tables, some with a lamp on top.
    for _ in range(rng.integers(1, 3)):
        w, d, h = rng.uniform(0.8, 1.5), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.8)
        x, z = free_spot(w / 2, d / 2)
        b.box([x - w / 2, floor_y - h, z - d / 2], [x + w / 2, floor_y, z + d / 2], "table")
        if rng.random() < 0.6:
            r = rng.uniform(0.12, 0.25)
            b.sphere([x + rng.uniform(-0.2, 0.2), floor_y - h - r, z], r, "lamp")
    # Hanging lamps.
    for _ in range(rng.integers(0, 3)):
        r = rng.uniform(0.15, 0.3)
        x, z = free_spot(r, r)
        b.sphere([x, ceil_y + rng.uniform(0.5, 0.9), z], r, "lamp")
    light = np.array([0.3 * (x0 + x1), ceil_y + 0.3, 0.5 * (z0 + z1)])
    return b.prims, light


def street(rng: np.random.Generator) -> tuple[list[Primitive], np.ndarray]:
    """A street ahead of the camera: road, sidewalks, buildings, cars, people, trees.

    Returns:
        The primitives and a light direction (3,) pointing from the scene to the sun.
    """
    b = _Builder(STREET_CLASSES)
    ground = rng.uniform(1.2, 1.6)
    half_road = rng.uniform(3.5, 6.0)
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
