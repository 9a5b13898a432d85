"""Procedural scenes with exact ground truth: the demo's and the tests' data.

`render_scene(seed, size, kind)` ray-casts a random layout (`layouts.py`) through a camera:

- "room":   pinhole camera (NYUv2 intrinsics scaled to `size`) inside a furnished room;
- "street": pinhole camera (Cityscapes intrinsics scaled to `size`) on a street;
- "pano":   equirectangular panorama (Stanford-2D-3D style) from the middle of a room, with
            black void rows at the top and bottom like the real panoramas.

Each class has its own colour and a solid checker texture of its own scale, shaded by a light,
so a small network can learn the classes from local appearance. Depth is exact (z for pinhole
cameras, distance from the centre for panoramas), normals are exact (camera frame for pinhole
cameras; for panoramas the global frame x east, y north, z up, plus the paper's local frame),
and boundaries mark segment changes and depth jumps. Deterministic by seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from pipelines.datasets import layouts
from pipelines.datasets.geometry import cast

KINDS = ("room", "street", "pano")
NYU_CAMERA = (518.857901, 519.469611, 325.582449, 253.736166, 640, 480)  # fx fy cx cy W H
CITYSCAPES_CAMERA = (2262.52, 2265.3017905988554, 1096.98, 513.137, 2048, 1024)
VOID_ELEVATION = np.deg2rad(72.0)  # panorama rows beyond +-72 degrees are void
DEPTH_JUMP = 0.1  # relative depth change between neighbours that makes a boundary

# Per class: RGB base colour, checker period (m) and checker contrast. Index = class id.
ROOM_LOOK = [((200, 190, 160), 0.50, 0.10), ((120, 80, 50), 0.30, 0.25), ((235, 235, 240), 1.00, 0.05),
             ((60, 90, 150), 0.15, 0.30), ((70, 140, 90), 0.08, 0.20), ((140, 40, 40), 0.25, 0.15),
             ((250, 220, 60), 0.05, 0.35)]
STREET_LOOK = [((90, 90, 95), 0.60, 0.15), ((180, 160, 150), 0.40, 0.30), ((150, 100, 80), 1.50, 0.25),
               ((40, 130, 40), 0.30, 0.35), ((135, 185, 235), 1.00, 0.00), ((200, 30, 30), 0.70, 0.10),
               ((230, 180, 140), 0.20, 0.30)]


@dataclass
class Scene:
    """A rendered scene. Arrays are (H, W, ...) with H = size[0].

    image (H, W, 3) uint8; semantic (H, W) uint8 ids into class_names, 255 where nothing
    (panorama void); segments (H, W) int32 primitive ids (1..), 0 where nothing; valid (H, W)
    bool where depth and normals exist; depth (H, W) float32 (0 where invalid); normals
    (H, W, 3) float32 unit (0 where invalid); boundaries (H, W) uint8 0/1; intrinsics
    (fx, fy, cx, cy) for pinhole kinds; theta0 (the panorama's reference angle) and
    normals_local (H, W, 3) for "pano".
    """

    kind: str
    class_names: tuple[str, ...]
    image: np.ndarray
    semantic: np.ndarray
    segments: np.ndarray
    valid: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    boundaries: np.ndarray
    intrinsics: Optional[tuple[float, float, float, float]] = None
    theta0: Optional[float] = None
    normals_local: Optional[np.ndarray] = None


def scaled_intrinsics(camera: tuple, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Intrinsics (fx, fy, cx, cy) of `camera` (fx, fy, cx, cy, W, H) resized to `size` (H, W)."""
    fx, fy, cx, cy, w0, h0 = camera
    sx, sy = size[1] / w0, size[0] / h0
    return fx * sx, fy * sy, cx * sx, cy * sy


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """World-from-camera rotation: yaw about y, then pitch about x, then roll about z."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


def _shade(
    points: np.ndarray,
    normals: np.ndarray,
    cls: np.ndarray,
    segments: np.ndarray,
    hit: np.ndarray,
    looks: list,
    light: np.ndarray,
    point_light: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """(N, 3) float RGB per ray: class colour x checker x Lambert shading, per-segment tint,
    sensor noise. points/normals (N, 3), cls/segments/hit (N,); `light` is a position if
    `point_light` else a direction towards the light."""
    base = np.array([look[0] for look in looks], float)[cls] / 255.0
    period = np.array([look[1] for look in looks])[cls]
    contrast = np.array([look[2] for look in looks])[cls]
    phase = np.floor(points / period[:, None])
    checker = np.where(phase.sum(axis=1) % 2 == 0, 1.0, 1.0 - 2 * contrast)
    to_light = (light - points) if point_light else np.broadcast_to(light, points.shape)
    to_light = to_light / np.linalg.norm(to_light, axis=1, keepdims=True)
    lambert = np.clip(np.einsum("ij,ij->i", normals, to_light), 0.0, 1.0)
    tint = 1.0 + 0.08 * np.sin(segments * 12.9898)
    rgb = base * (checker * (0.45 + 0.55 * lambert) * tint)[:, None]
    rgb = np.where(hit[:, None], rgb, 0.0)
    return rgb * 255.0 + rng.normal(0.0, 2.0, rgb.shape)


def _boundaries(segments: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1 where the right or lower neighbour is another segment or a depth jump > DEPTH_JUMP."""
    out = np.zeros(segments.shape, bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        a, b = tuple(a), tuple(b)
        edge = segments[a] != segments[b]
        both = valid[a] & valid[b]
        with np.errstate(divide="ignore", invalid="ignore"):
            jump = np.abs(depth[a] - depth[b]) > DEPTH_JUMP * np.minimum(depth[a], depth[b])
        out[a] |= edge | (both & jump)
    return out.astype(np.uint8)


def _pano_rays(h: int, w: int, azimuth0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equirectangular rays: (H*W, 3) unit directions in the layouts' y-down frame, and the
    (H, W) elevation (row centres, +90 deg at the top) and azimuth (azimuth0 - 2 pi col / W,
    so the view turns right, clockwise seen from above, as columns increase)."""
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    elevation = np.pi / 2 - np.pi * (rows + 0.5) / h
    azimuth = azimuth0 - 2 * np.pi * cols / w
    # (east, north, up) -> the layouts' y-down frame (x = east, y = -up, z = north)
    dirs = np.stack([np.cos(elevation) * np.cos(azimuth), -np.sin(elevation), np.cos(elevation) * np.sin(azimuth)], -1)
    return dirs.reshape(-1, 3), elevation, azimuth


def _pinhole_rays(h: int, w: int, intrinsics: tuple[float, float, float, float], rot: np.ndarray) -> np.ndarray:
    """(H*W, 3) world rays with camera z = 1, so the hit parameter t is the z-depth."""
    fx, fy, cx, cy = intrinsics
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    dirs = np.stack([(cols - cx) / fx, (rows - cy) / fy, np.ones_like(rows)], -1) @ rot.T
    return dirs.reshape(-1, 3)


def _local_normals(normals: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Global (N, 3) normals -> (right, forward, up) components w.r.t. each ray's azimuth (N,)."""
    right = np.stack([np.sin(azimuth), -np.cos(azimuth)], -1)
    forward = np.stack([np.cos(azimuth), np.sin(azimuth)], -1)
    return np.stack([np.einsum("ij,ij->i", normals[:, :2], right),
                     np.einsum("ij,ij->i", normals[:, :2], forward), normals[:, 2]], -1)


def render_scene(
    seed: int,
    size: tuple[int, int],
    kind: str = "room",
) -> Scene:
    """Render one scene.

    Args:
        seed: random seed; the same seed, size and kind give the same scene.
        size: (H, W) in pixels, any size.
        kind: "room", "street" or "pano" (see the module docstring).
    """
    if kind not in KINDS:
        raise ValueError(f"render_scene: kind {kind!r} is not one of {KINDS}")
    h, w = int(size[0]), int(size[1])
    if h < 2 or w < 2:
        raise ValueError(f"render_scene: size {size} must be at least (2, 2)")
    rng = np.random.default_rng(seed)
    intrinsics, theta0, rot = None, None, np.eye(3)
    if kind == "pano":
        prims, light = layouts.room(rng, panorama=True)
        azimuth0 = rng.uniform(0, 2 * np.pi)
        theta0 = float((np.pi / 2 - azimuth0) % (2 * np.pi))  # see normals.global_to_local
        dirs, elevation, azimuth = _pano_rays(h, w, azimuth0)
    elif kind == "room":
        prims, light = layouts.room(rng, panorama=False)
        rot = _rotation(rng.uniform(-0.45, 0.45), rng.uniform(-0.25, 0.1), rng.uniform(-0.05, 0.05))
        intrinsics = scaled_intrinsics(NYU_CAMERA, (h, w))
        dirs = _pinhole_rays(h, w, intrinsics, rot)
    else:
        prims, light = layouts.street(rng)
        rot = _rotation(rng.uniform(-0.08, 0.08), rng.uniform(-0.05, 0.05), rng.uniform(-0.02, 0.02))
        intrinsics = scaled_intrinsics(CITYSCAPES_CAMERA, (h, w))
        dirs = _pinhole_rays(h, w, intrinsics, rot)

    hits = cast(np.zeros(3), dirs, prims)
    valid = np.isfinite(hits.t)
    t = np.where(valid, hits.t, 0.0)
    cls = np.array([p.cls for p in prims] + [0])[hits.prim]
    segments = np.where(valid, np.array([p.segment for p in prims] + [0])[hits.prim], 0)
    class_names = layouts.STREET_CLASSES if kind == "street" else layouts.ROOM_CLASSES
    looks = STREET_LOOK if kind == "street" else ROOM_LOOK
    rgb = _shade(dirs * t[:, None], hits.normal, cls, segments, valid, looks, light, kind != "street", rng)
    semantic = np.where(valid, cls, 255)
    depth = t
    normals = hits.normal @ rot  # world -> camera frame (rot is world-from-camera)
    normals_local = None
    if kind == "street":  # the sky: a class without geometry, shaded by a vertical gradient
        sky = class_names.index("sky")
        semantic = np.where(valid, cls, sky)
        gradient = np.linspace(0.75, 1.0, h)[:, None].repeat(w, 1).reshape(-1, 1)
        rgb = np.where(valid[:, None], rgb, np.array(STREET_LOOK[sky][0])[None] * gradient)
    if kind == "pano":  # void rows like the real panoramas; distance, global and local normals
        void = (np.abs(elevation) > VOID_ELEVATION).reshape(-1)
        valid &= ~void
        semantic = np.where(void, 255, semantic)
        segments = np.where(void, 0, segments)
        rgb = np.where(void[:, None], 0.0, rgb)
        depth = t * np.linalg.norm(dirs, axis=1)
        normals = np.stack([hits.normal[:, 0], hits.normal[:, 2], -hits.normal[:, 1]], -1)  # (east, north, up)
        normals_local = _local_normals(normals, azimuth.reshape(-1))
        normals_local = np.where(valid[:, None], normals_local, 0.0).reshape(h, w, 3).astype(np.float32)

    depth = np.where(valid, depth, 0.0).reshape(h, w).astype(np.float32)
    normals = np.where(valid[:, None], normals, 0.0).reshape(h, w, 3).astype(np.float32)
    segments = segments.reshape(h, w).astype(np.int32)
    valid = valid.reshape(h, w)
    return Scene(
        kind=kind,
        class_names=class_names,
        image=np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(h, w, 3),
        semantic=semantic.reshape(h, w).astype(np.uint8),
        segments=segments,
        valid=valid,
        depth=depth,
        normals=normals,
        boundaries=_boundaries(segments, depth, valid),
        intrinsics=intrinsics,
        theta0=theta0,
        normals_local=normals_local,
    )
