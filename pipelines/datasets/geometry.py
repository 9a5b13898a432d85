"""Ray casting against planes, axis-aligned boxes and spheres (the scene generator's core).

Everything is vectorised over rays: `cast(origin, dirs, prims)` intersects (N, 3) ray
directions from one origin with every primitive and keeps the nearest hit. Boxes and
spheres are first culled with a bounding sphere so only the rays that can hit them pay for
the exact test; normals are computed once, for the winning primitive of each ray. Each
primitive carries a semantic class id and a segment id (unique per primitive) so the
renderer gets labels, instances and exact geometry from the same pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Hits:
    """Nearest hit per ray. t: (N,) ray parameter (inf = no hit); normal: (N, 3) unit, facing
    the ray (0 where no hit); prim: (N,) index into the primitive list (-1 = no hit)."""

    t: np.ndarray
    normal: np.ndarray
    prim: np.ndarray


@dataclass
class Plane:
    """The plane {p : n.p = d}, seen only from the side `normal` points to.

    Args:
        normal: (3,) unit normal pointing towards the visible side.
        offset: d in n.p = d.
        cls: semantic class id of the scene.
        segment: segment id, unique within the scene.
    """

    normal: np.ndarray
    offset: float
    cls: int
    segment: int

    def bound(self) -> None:
        return None  # unbounded: every ray is a candidate

    def hit(self, o: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        denom = dirs @ self.normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.offset - o @ self.normal) / denom
        return np.where((denom < -1e-12) & (t > 1e-9), t, np.inf)

    def normal_at(self, points: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.normal, float), points.shape)


@dataclass
class Box:
    """An axis-aligned box seen from outside.

    Args:
        lo: (3,) minimum corner.
        hi: (3,) maximum corner.
        cls: semantic class id of the scene.
        segment: segment id, unique within the scene.
    """

    lo: np.ndarray
    hi: np.ndarray
    cls: int
    segment: int

    def bound(self) -> tuple[np.ndarray, float]:
        return (self.lo + self.hi) / 2, float(np.linalg.norm(self.hi - self.lo) / 2)

    def hit(self, o: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            t1 = (self.lo - o) * inv
            t2 = (self.hi - o) * inv
        # 0 * inf = nan only when a ray runs inside a face's plane: no constraint on that axis.
        near = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf).max(axis=1)
        far = np.nan_to_num(np.maximum(t1, t2), nan=np.inf).min(axis=1)
        return np.where((near <= far) & (near > 1e-9), near, np.inf)

    def normal_at(self, points: np.ndarray) -> np.ndarray:
        centre, half = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
        rel = (points - centre) / half  # the face hit has |rel| = 1 on its axis
        axis = np.argmax(np.abs(rel), axis=1)
        normal = np.zeros_like(points)
        rows = np.arange(len(points))
        normal[rows, axis] = np.sign(rel[rows, axis])
        return normal


@dataclass
class Sphere:
    """A sphere seen from outside.

    Args:
        centre: (3,) centre.
        radius: radius.
        cls: semantic class id of the scene.
        segment: segment id, unique within the scene.
    """

    centre: np.ndarray
    radius: float
    cls: int
    segment: int

    def bound(self) -> tuple[np.ndarray, float]:
        return self.centre, self.radius

    def hit(self, o: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        oc = o - self.centre
        a = np.einsum("ij,ij->i", dirs, dirs)
        b = 2.0 * dirs @ oc
        c = oc @ oc - self.radius**2
        disc = b * b - 4 * a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
        return np.where((disc >= 0) & (t > 1e-9), t, np.inf)

    def normal_at(self, points: np.ndarray) -> np.ndarray:
        return (points - self.centre) / self.radius


Primitive = Plane | Box | Sphere


def _candidates(o: np.ndarray, dirs: np.ndarray, dir_sq: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: rays that pass within `radius` of `centre` (ahead of the origin or inside)."""
    c = centre - o
    along = dirs @ c
    miss_sq = c @ c - along * along / dir_sq
    inside = c @ c <= radius * radius
    return inside | ((along > 0) & (miss_sq <= radius * radius))


def cast(origin: np.ndarray, dirs: np.ndarray, prims: list[Primitive]) -> Hits:
    """Nearest hit of each ray `origin + t * dirs[i]` among `prims`.

    Args:
        origin: (3,) common ray origin.
        dirs: (N, 3) ray directions (any length; t is in units of that length).
        prims: the scene's primitives.
    """
    o = np.asarray(origin, dtype=np.float64)
    dir_sq = np.einsum("ij,ij->i", dirs, dirs)
    best_t = np.full(len(dirs), np.inf)
    best_p = np.full(len(dirs), -1, dtype=np.int64)
    for i, prim in enumerate(prims):
        bound = prim.bound()
        if bound is None:
            t = prim.hit(o, dirs)
            closer = t < best_t
            best_t[closer], best_p[closer] = t[closer], i
            continue
        rays = np.flatnonzero(_candidates(o, dirs, dir_sq, *bound))
        if rays.size:
            t = prim.hit(o, dirs[rays])
            closer = t < best_t[rays]
            best_t[rays[closer]], best_p[rays[closer]] = t[closer], i
    normal = np.zeros_like(dirs)
    for i, prim in enumerate(prims):
        rays = np.flatnonzero(best_p == i)
        if rays.size:
            normal[rays] = prim.normal_at(o + dirs[rays] * best_t[rays, None])
    return Hits(t=best_t, normal=normal, prim=best_p)
