"""The procedural scene generator: determinism, exact geometry, boundaries, learnable classes."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.datasets.scenes import render_scene


def camera_points(scene):
    """Back-project a pinhole scene's z-depth with its intrinsics: (H, W, 3)."""
    fx, fy, cx, cy = scene.intrinsics
    h, w = scene.depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = scene.depth.astype(np.float64)
    return np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], -1)


@pytest.mark.parametrize("kind", ["room", "street", "pano"])
def test_deterministic_by_seed_and_any_size(kind):
    a = render_scene(3, (30, 44), kind)
    b = render_scene(3, (30, 44), kind)
    c = render_scene(4, (30, 44), kind)
    for field in ("image", "semantic", "segments", "depth", "normals", "boundaries"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.image, c.image)
    odd = render_scene(1, (7, 13), kind)
    assert odd.image.shape == (7, 13, 3) and odd.image.dtype == np.uint8
    assert odd.depth.shape == odd.semantic.shape == odd.boundaries.shape == (7, 13)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        render_scene(0, (8, 8), "forest")
    with pytest.raises(ValueError, match="size"):
        render_scene(0, (1, 8), "room")


@pytest.mark.parametrize("kind", ["room", "street"])
def test_plane_and_box_pixels_lie_on_their_planes(kind):
    # For every flat segment, n . p is the same for all its pixels (p back-projected from
    # depth with the intrinsics, n the normal): depth and normals describe one plane.
    scene = render_scene(11, (90, 120), kind)
    p = camera_points(scene)
    checked = 0
    for seg in np.unique(scene.segments[scene.segments > 0]):
        where = scene.segments == seg
        n = scene.normals[where]
        if where.sum() < 20 or np.ptp(n, axis=0).max() > 1e-4:
            continue  # curved (sphere) or tiny
        offsets = (n * p[where]).sum(-1)
        assert np.ptp(offsets) < 1e-3 * max(1.0, abs(offsets).max()), seg
        checked += 1
    assert checked >= 5


def test_sphere_pixels_share_one_centre():
    # On a sphere p - r n is the centre for every pixel; solve r by least squares.
    scene = render_scene(2, (120, 160), "room")
    p = camera_points(scene)
    lamp = scene.class_names.index("lamp")
    segs = [s for s in np.unique(scene.segments[scene.semantic == lamp]) if (scene.segments == s).sum() > 30]
    assert segs, "seed 2 should show a lamp"
    for seg in segs:
        where = scene.segments == seg
        pts, n = p[where], scene.normals[where].astype(np.float64)
        dp, dn = pts - pts.mean(0), n - n.mean(0)
        r = (dp * dn).sum() / (dn * dn).sum()
        centres = pts - r * n
        assert 0.05 < r < 0.5
        assert np.abs(centres - centres.mean(0)).max() < 2e-3


def test_normals_unit_and_facing_camera_depth_positive():
    scene = render_scene(6, (40, 60), "room")
    v = scene.valid
    assert v.all()  # a closed room: every ray hits something
    assert np.allclose(np.linalg.norm(scene.normals[v], axis=-1), 1.0, atol=1e-5)
    assert np.all((scene.normals * camera_points(scene)).sum(-1)[v] < 0)
    assert np.all(scene.depth[v] > 0)


def test_street_sky_has_no_depth_and_road_faces_up():
    scene = render_scene(0, (64, 128), "street")
    sky = scene.semantic == scene.class_names.index("sky")
    assert sky.any() and not scene.valid[sky].any() and np.all(scene.depth[sky] == 0)
    road = scene.semantic == scene.class_names.index("road")
    assert road.any() and np.all(scene.normals[road][:, 1] < -0.98)  # camera y points down


def test_panorama_plane_segments_consistent_in_local_frame():
    # Local frame per column: the pixel's ray is (0, cos el, sin el) in (right, forward, up),
    # so depth * ray . local normal is constant on each flat segment.
    scene = render_scene(4, (64, 128), "pano")
    h, w = scene.depth.shape
    el = np.pi / 2 - np.pi * (np.arange(h) + 0.5) / h
    ray = np.stack([np.zeros((h, w)), np.cos(el)[:, None].repeat(w, 1), np.sin(el)[:, None].repeat(w, 1)], -1)
    p = ray * scene.depth[..., None]
    for name in ("floor", "ceiling"):
        where = (scene.semantic == scene.class_names.index(name)) & scene.valid
        offsets = (p[where] * scene.normals_local[where]).sum(-1)
        assert where.sum() > 50 and np.ptp(offsets) < 1e-3
    void = ~scene.valid
    assert void[0].all() and void[-1].all() and np.all(scene.image[void] == 0)
    assert np.all(scene.semantic[void] == 255)


def test_boundaries_mark_label_changes_and_depth_jumps():
    scene = render_scene(8, (48, 64), "room")
    seg, b = scene.segments, scene.boundaries.astype(bool)
    h, w = seg.shape
    for r in range(h):
        for c in range(w):
            change = (c + 1 < w and seg[r, c] != seg[r, c + 1]) or (r + 1 < h and seg[r, c] != seg[r + 1, c])
            if change:
                assert b[r, c], (r, c)
    # Inside a segment and away from depth jumps there are no boundaries.
    d = scene.depth
    smooth = np.ones_like(b)
    smooth[:, :-1] &= (seg[:, :-1] == seg[:, 1:]) & (np.abs(d[:, :-1] - d[:, 1:]) < 0.1 * np.minimum(d[:, :-1], d[:, 1:]))
    smooth[:-1] &= (seg[:-1] == seg[1:]) & (np.abs(d[:-1] - d[1:]) < 0.1 * np.minimum(d[:-1], d[1:]))
    assert smooth.any() and not b[smooth].any()


@pytest.mark.parametrize("kind", ["room", "street"])
def test_classes_separable_by_colour(kind):
    # Learnability: class means of pixel colour from training scenes classify pixels of a
    # held-out scene far above chance (1 / number of classes present).
    train = [render_scene(s, (48, 64), kind) for s in range(6)]
    test = render_scene(100, (48, 64), kind)
    classes = sorted(set(np.unique(np.concatenate([t.semantic.ravel() for t in train]))) - {255})
    means = np.stack([np.concatenate([t.image[t.semantic == c] for t in train]).mean(0) for c in classes])
    pix = test.image.reshape(-1, 3).astype(np.float64)
    pred = np.array(classes)[np.argmin(((pix[:, None] - means[None]) ** 2).sum(-1), axis=1)]
    accuracy = (pred == test.semantic.ravel()).mean()
    present = len(np.unique(test.semantic))
    assert accuracy > 3.0 / present


def test_ray_casting_hand_computed_hits():
    from pipelines.datasets.geometry import Box, Plane, Sphere, cast

    prims = [
        Plane(np.array([0.0, -1.0, 0.0]), -2.0, 0, 1),  # floor y = 2 seen from above (y down)
        Box(np.array([-1.0, -1.0, 4.0]), np.array([1.0, 1.0, 6.0]), 1, 2),
        Sphere(np.array([0.0, 0.0, 3.0]), 0.5, 2, 3),
        Box(np.array([2.0, -0.5, -0.5]), np.array([3.0, 0.5, 0.5]), 1, 4),  # beside the camera
    ]
    dirs = np.array([
        [0.0, 0.0, 1.0],    # through the sphere's centre: t = 2.5, normal (0, 0, -1)
        [0.9, 0.0, 4.0],    # misses the sphere, enters the box's front face at z = 4: t = 1
        [0.0, 1.0, 1.0],    # down to the floor: y = 2 at t = 2, normal (0, -1, 0)
        [0.0, -1.0, 0.0],   # straight up: nothing
        [1.0, 0.0, 0.2],    # sideways into the second box's -x face: x = 2 at t = 2
    ])
    hits = cast(np.zeros(3), dirs, prims)
    assert np.allclose(hits.t[[0, 1, 2, 4]], [2.5, 1.0, 2.0, 2.0]) and np.isinf(hits.t[3])
    assert hits.prim.tolist() == [2, 1, 0, -1, 3]
    assert np.allclose(hits.normal[[0, 1, 2, 4]], [[0, 0, -1], [0, 0, -1], [0, -1, 0], [-1, 0, 0]])
    assert np.all(hits.normal[3] == 0)


def test_culling_matches_brute_force_nearest_hit():
    from pipelines.datasets import layouts
    from pipelines.datasets.geometry import cast

    prims, _ = layouts.room(np.random.default_rng(3), panorama=True)
    dirs = np.random.default_rng(4).normal(size=(4000, 3))
    hits = cast(np.zeros(3), dirs, prims)
    brute = np.stack([p.hit(np.zeros(3), dirs) for p in prims])  # every primitive, every ray
    assert np.allclose(hits.t, brute.min(0)) and np.array_equal(hits.prim, brute.argmin(0))
