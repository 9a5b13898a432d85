"""Normals from depth (Silberman's plane fit) and the panorama local-normal transform."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.datasets.normals import (
    estimate_reference_angle,
    global_to_local,
    normals_from_depth,
    reference_angle_at,
    smallest_eigenvector,
)
from pipelines.datasets.scenes import render_scene

K = (120.0, 124.0, 39.5, 29.5)  # fx fy cx cy for 60 x 80 test images


def plane_depth(normal, distance, size=(60, 80), intrinsics=K):
    """z-depth of the plane n.p = -distance seen through a pinhole camera (by ray intersection)."""
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:size[0], 0:size[1]].astype(np.float64)
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
    depth = -distance / (rays @ np.asarray(normal))
    assert np.all(depth > 0), "test plane must lie in front of the camera everywhere"
    return depth.astype(np.float32)


def angle_deg(a, b):
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


@pytest.mark.parametrize("tilt", [(0, 0), (30, 0), (0, -40), (25, 35), (-50, 10)])
def test_planes_with_known_normals_recovered_within_one_degree(tilt):
    ax, ay = np.radians(tilt)
    normal = np.array([np.sin(ax), np.sin(ay), -np.cos(ax) * np.cos(ay)])
    normal /= np.linalg.norm(normal)
    depth = plane_depth(normal, 2.5)
    normals, valid = normals_from_depth(depth, K)
    assert valid.all()
    assert angle_deg(normals, normal).max() < 1.0


def test_noisy_plane_still_within_one_degree():
    normal = np.array([0.3, -0.4, -0.866])
    normal /= np.linalg.norm(normal)
    depth = plane_depth(normal, 2.0)
    depth = np.round(depth * 1000) / 1000  # millimetre quantisation, like a depth sensor
    normals, valid = normals_from_depth(depth, K)
    inner = (slice(9, -9), slice(9, -9))
    assert angle_deg(normals[inner], normal).max() < 1.0


def test_depth_gate_keeps_foreground_and_background_apart():
    # Left half: a fronto-parallel plane at 1 m; right half: a tilted plane at about 3 m.
    front = np.array([0.0, 0.0, -1.0])
    back = np.array([-0.5, 0.0, -0.866])
    depth = plane_depth(front, 1.0)
    depth[:, 40:] = plane_depth(back, 3.0)[:, 40:]
    normals, valid = normals_from_depth(depth, K)
    # Right next to the jump each side still sees only its own plane (5% depth gate).
    assert angle_deg(normals[:, 35:40], front).max() < 1.0
    assert angle_deg(normals[:, 40:45], back / np.linalg.norm(back)).max() < 1.0


def naive_normal(points, depth, r, c, offsets=(0, 1, -1, 3, -3, 6, -6, 9, -9)):
    """Textbook plane fit at one pixel: gather neighbours, SVD of the centred points."""
    z0 = depth[r, c]
    neigh = []
    for dv in offsets:
        for du in offsets:
            rr, cc = r + dv, c + du
            if 0 <= rr < depth.shape[0] and 0 <= cc < depth.shape[1]:
                z = depth[rr, cc]
                if z > 0 and abs(z - z0) < 0.05 * z0:
                    neigh.append(points[rr, cc])
    neigh = np.array(neigh, np.float64)
    _, sv, vt = np.linalg.svd(neigh - neigh.mean(0))
    n = vt[-1]
    # Well conditioned only if the points spread in two directions, not along a line.
    conditioned = len(neigh) >= 3 and sv[1] > 0.05 * sv[0] and sv[2] < 0.1 * sv[1]
    return (-n if n @ points[r, c] > 0 else n), conditioned


def test_matches_naive_per_pixel_fit_on_curved_surface():
    scene = render_scene(5, (48, 64), "room")
    fx, fy, cx, cy = scene.intrinsics
    v, u = np.mgrid[0:48, 0:64]
    points = np.stack([(u - cx) / fx * scene.depth, (v - cy) / fy * scene.depth, scene.depth], -1).astype(np.float64)
    normals, valid = normals_from_depth(scene.depth, scene.intrinsics)
    rng = np.random.default_rng(0)
    compared = 0
    for r, c in zip(rng.integers(0, 48, 60), rng.integers(0, 64, 60)):
        assert valid[r, c]
        expected, conditioned = naive_normal(points, scene.depth, r, c)
        if conditioned:
            assert angle_deg(normals[r, c], expected) < 0.1
            compared += 1
    assert compared >= 30


def test_isolated_pixels_and_holes_are_invalid_and_normals_face_camera():
    depth = plane_depth(np.array([0.2, 0.1, -0.97]) / np.linalg.norm([0.2, 0.1, -0.97]), 2.0)
    depth[20:40, 20:40] = 0.0
    depth[30, 30] = 2.0  # alone in a hole: only itself within the window -> < 3 points
    normals, valid = normals_from_depth(depth, K)
    assert not valid[25, 25] and not valid[30, 30]
    assert np.all(normals[~valid] == 0)
    fx, fy, cx, cy = K
    v, u = np.mgrid[0:60, 0:80]
    p = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)
    assert np.all((normals * p).sum(-1)[valid] < 0)
    assert np.allclose(np.linalg.norm(normals[valid], axis=-1), 1.0, atol=1e-5)


def test_smallest_eigenvector_agrees_with_lapack():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 3, 3))
    cov = a @ a.transpose(0, 2, 1)
    _, vecs = np.linalg.eigh(cov)
    upper = np.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 0, 2], cov[:, 1, 1], cov[:, 1, 2], cov[:, 2, 2]])
    ours = smallest_eigenvector(upper)
    assert np.allclose(np.abs((ours * vecs[:, :, 0]).sum(-1)), 1.0, atol=1e-6)


def test_global_to_local_rotation_by_hand():
    # Width 4: columns rotate by theta0 + 0, 90, 180, 270 degrees.
    n = np.tile(np.array([1.0, 0.0, 0.5], np.float32), (1, 4, 1))
    local = global_to_local(n, theta0=0.0)
    expected = np.array([[1, 0, 0.5], [0, 1, 0.5], [-1, 0, 0.5], [0, -1, 0.5]], np.float32)
    assert np.allclose(local[0], expected, atol=1e-6)
    local = global_to_local(n[:, :1], theta0=np.pi / 2)
    assert np.allclose(local[0, 0], [0, 1, 0.5], atol=1e-6)


def test_reference_angle_makes_the_normal_face_the_camera():
    normal = np.array([0.6, -0.8, 0.0])
    theta0 = reference_angle_at(normal, col=3, width=16)
    row = np.zeros((1, 16, 3), np.float32)
    row[0, 3] = normal
    assert np.allclose(global_to_local(row, theta0)[0, 3], [0, -1, 0], atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_panorama_local_normals_match_generator(seed):
    scene = render_scene(seed, (96, 192), "pano")
    v = scene.valid
    # The generator's local normals come from dot products with each column's right and
    # forward vectors; the transform here is the appendix's rotation by theta0 + 2 pi c / W.
    assert np.allclose(global_to_local(scene.normals, scene.theta0)[v], scene.normals_local[v], atol=1e-5)
    elevation = np.pi / 2 - np.pi * (np.arange(96) + 0.5) / 96
    wall = (scene.semantic == scene.class_names.index("wall")) & v
    theta = estimate_reference_angle(scene.normals, scene.depth, wall, elevation)
    diff = np.angle(np.exp(1j * (theta - scene.theta0)))
    assert abs(np.degrees(diff)) < 2.0
