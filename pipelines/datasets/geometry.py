"""Ray casting against planes, axis-aligned boxes and spheres (the scene generator's core).

Everything is vectorised over rays: `cast(origin, dirs, prims)` intersects (N, 3) ray
directions from one origin with every primitive and keeps the nearest hit. Each primitive
carries a semantic class id and a segment id (unique per primitive) so the renderer gets
labels, instances and exact geometry from the same pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Hits:
    """Nearest hit per ray. t: (N,) ray parameter (inf = no hit); normal: (N, 3) unit, facing
    the ray; prim: (N,) index into the primitive list (-1 = no hit)."""

    t: np.ndarray
    normal: np.ndarray
    prim: np.ndarray


@dataclass
class Plane:
    """The half-space boundary {p : n.p = d}, seen only from the side `normal` points to.

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

    def intersect(self, o: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = np.asarray(self.normal, dtype=np.float64)
        denom = dirs @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.offset - o @ n) / denom
        t = np.where((denom < -1e-12) & (t > 1e-9), t, np.inf)
        return t, np.broadcast_to(n, dirs.shape)


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

    def intersect(self, o: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            t1 = (np.asarray(self.lo) - o) * inv
            t2 = (np.asarray(self.hi) - o) * inv
        t1 = np.nan_to_num(t1, nan=-np.inf)
        t2 = np.nan_to_num(t2, nan=np.inf)
        near = np.minimum(t1, t2)
        far = np.maximum(t1, t2)
        axis = np.argmax(near, axis=1)
        t_near = near[np.arange(len(dirs)), axis]
        t_far = far.min(axis=1)
        hit = (t_near <= t_far) & (t_near > 1e-9)
        normal = np.zeros_like(dirs)
        normal[np.arange(len(dirs)), axis] = -np.sign(dirs[np.arange(len(dirs)), axis])
        return np.where(hit, t_near, np.inf), normal


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

    def intersect(self, o: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        oc = o - np.asarray(self.centre)
        a = np.einsum("ij,ij->i", dirs, dirs)
        b = 2.0 * dirs @ oc
        c = oc @ oc - self.radius**2
        disc = b * b - 4 * a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        t = (-b - root) / (2 * a)
        t = np.where((disc >= 0) & (t > 1e-9), t, np.inf)
        point = o + dirs * np.where(np.isfinite(t), t, 0.0)[:, None]
        return t, (point - np.asarray(self.centre)) / self.radius


Primitive = Plane | Box | Sphere


def cast(origin: np.ndarray, dirs: np.ndarray, prims: list[Primitive]) -> Hits:
    """Nearest hit of each ray `origin + t * dirs[i]` among `prims`.

    Args:
        origin: (3,) common ray origin.
        dirs: (N, 3) ray directions (any length; t is in units of that length).
        prims: the scene's primitives.
    """
    o = np.asarray(origin, dtype=np.float64)
    best_t = np.full(len(dirs), np.inf)
    best_n = np.zeros_like(dirs)
    best_p = np.full(len(dirs), -1, dtype=np.int64)
    for i, prim in enumerate(prims):
        t, n = prim.intersect(o, dirs)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        best_n = np.where(closer[:, None], n, best_n)
        best_p = np.where(closer, i, best_p)
    return Hits(t=best_t, normal=best_n, prim=best_p)
