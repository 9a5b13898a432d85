"""Ray casting against planes, axis-aligned boxes and spheres (the scene generator's core).

Everything is vectorised over rays: `cast(origin, dirs, prims)` intersects (N, 3) ray
directions from one origin with every primitive and keeps the nearest hit. Boxes and
spheres are first culled with a bounding sphere so only the rays that can hit them pay for
the exact test; normals are computed once, for the winning primitive of each ray. Each
primitive carries a semantic class id, a segment id (unique per primitive) and a material
name, so the renderer gets labels, instances, looks and exact geometry from the same pass.
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
        material: the renderer's look (`materials.MATERIALS`); "" = the class's default.
    """

    normal: np.ndarray
    offset: float
    cls: int
    segment: int
    material: str = ""

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
        material: the renderer's look (`materials.MATERIALS`); "" = the class's default.
    """

    lo: np.ndarray
    hi: np.ndarray
    cls: int
    segment: int
    material: str = ""

    def bound(self) -> tuple[np.ndarray, float]:
        return (self.lo + self.hi) / 2, float(np.linalg.norm(self.hi - self.lo) / 2)

    def hit(self, o: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            t1 = (self.lo - o) * inv
            t2 = (self.hi - o) * inv
        # 0 * inf = nan only when a ray runs inside a face's plane: no constraint on that axis.
        # fmax/fmin skip the nan; an all-nan row stays nan and counts as a miss.
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        near = np.fmax(np.fmax(lo[:, 0], lo[:, 1]), lo[:, 2])  # per-column: faster than .reduce(axis=1)
        far = np.fmin(np.fmin(hi[:, 0], hi[:, 1]), hi[:, 2])
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
        material: the renderer's look (`materials.MATERIALS`); "" = the class's default.
    """

    centre: np.ndarray
    radius: float
    cls: int
    segment: int
    material: str = ""

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


GRID = 32  # ray groups per angle (azimuth, elevation) for the coarse culling


def _candidates(o: np.ndarray, dirs: np.ndarray, dir_sq: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: rays that pass within `radius` of `centre` (ahead of the origin or inside)."""
    c = centre - o
    along = dirs @ c
    miss_sq = c @ c - along * along / dir_sq
    inside = c @ c <= radius * radius
    return inside | ((along > 0) & (miss_sq <= radius * radius))


def _ray_groups(dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays grouped into cones by direction: group id per ray (N,), unit axis (G, 3) and
    half-angle (G,) of each group's cone (every ray of the group lies inside it)."""
    u = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    az, el = np.arctan2(u[:, 0], u[:, 2]), np.arcsin(np.clip(u[:, 1], -1.0, 1.0))
    cell = np.zeros(len(u), np.int64)
    for angle in (az, el):
        lo, span = angle.min(), max(np.ptp(angle), 1e-12)
        cell = cell * GRID + np.minimum((angle - lo) / span * GRID, GRID - 1).astype(np.int64)
    present = np.bincount(cell, minlength=GRID * GRID) > 0
    group = (np.cumsum(present) - 1)[cell]  # cells renumbered 0..G-1 in increasing order
    n = int(present.sum())
    axis = np.stack([np.bincount(group, weights=u[:, k], minlength=n) for k in range(3)], -1)
    axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-12)
    cos = np.full(n, 1.0)
    np.minimum.at(cos, group, np.einsum("ij,ij->i", u, axis[group]))
    return group, axis, np.arccos(np.clip(cos, -1.0, 1.0)) + 1e-6


def nearest(origin: np.ndarray, dirs: np.ndarray, prims: list[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit parameter t (N,) (inf = none) and primitive index (N,) (-1 = none) of each
    ray `origin + t * dirs[i]`; ties go to the lower index, as a brute-force argmin would.

    Boxes and spheres are culled twice before the exact test: by cones of similar rays (a
    group whose cone misses the bounding sphere is skipped whole), then ray by ray.
    """
    o = np.asarray(origin, dtype=np.float64)
    best_t = np.full(len(dirs), np.inf)
    best_p = np.full(len(dirs), -1, dtype=np.int64)
    if len(dirs) == 0:
        return best_t, best_p
    dir_sq = np.einsum("ij,ij->i", dirs, dirs)
    group, axis, half = _ray_groups(dirs)
    bounds = [prim.bound() for prim in prims]
    # Cone test of every bounded primitive against every group at once: (P, G) candidates.
    bounded = [i for i, bound in enumerate(bounds) if bound is not None]
    near_groups: dict[int, np.ndarray] = {}
    if bounded:
        v = np.array([bounds[i][0] for i in bounded]) - o
        radius = np.array([bounds[i][1] for i in bounded])
        dist = np.linalg.norm(v, axis=1)
        outside = dist > radius  # else the origin is inside the bound: every group is a candidate
        safe = np.where(outside, dist, 1.0)
        spread = np.arccos(np.clip((v / safe[:, None]) @ axis.T, -1.0, 1.0))
        margin = np.arcsin(np.clip(radius / safe, 0.0, 1.0))
        near = spread <= half[None] + margin[:, None]
        near_groups = {i: near[k] for k, i in enumerate(bounded) if outside[k]}
    everything = np.arange(len(dirs))
    for i, prim in enumerate(prims):
        bound = bounds[i]
        if bound is None:
            t = prim.hit(o, dirs)
            closer = t < best_t
            best_t[closer], best_p[closer] = t[closer], i
            continue
        centre, radius_i = bound
        if i in near_groups:
            groups = near_groups[i]
            if not groups.any():
                continue
            rays = np.flatnonzero(groups[group])
        else:
            rays = everything
        sub = dirs[rays]
        keep = _candidates(o, sub, dir_sq[rays], centre, radius_i)
        rays = rays[keep]
        if rays.size:
            t = prim.hit(o, sub[keep])
            closer = t < best_t[rays]
            best_t[rays[closer]], best_p[rays[closer]] = t[closer], i
    return best_t, best_p


def cast(origin: np.ndarray, dirs: np.ndarray, prims: list[Primitive]) -> Hits:
    """Nearest hit of each ray `origin + t * dirs[i]` among `prims`.

    Args:
        origin: (3,) common ray origin.
        dirs: (N, 3) ray directions (any length; t is in units of that length).
        prims: the scene's primitives.
    """
    o = np.asarray(origin, dtype=np.float64)
    best_t, best_p = nearest(o, dirs, prims)
    normal = np.zeros_like(dirs)
    order = np.argsort(best_p, kind="stable")
    bounds = np.searchsorted(best_p[order], np.arange(len(prims) + 1))
    for i, prim in enumerate(prims):
        rays = order[bounds[i] : bounds[i + 1]]
        if rays.size:
            normal[rays] = prim.normal_at(o + dirs[rays] * best_t[rays, None])
    return Hits(t=best_t, normal=normal, prim=best_p)
