"""NYUv2 reader on a generated MATLAB v7.3 file, and on a hand-made one with known values."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io
from scipy import ndimage

from pipelines.datasets.encoders import ROOM_TO_NYU40
from pipelines.datasets.errors import DatasetError
from pipelines.datasets.nyuv2 import NYUv2Reader
from pipelines.datasets.readers import get_reader
from pipelines.datasets.write_formats import planned_scenes, write_dataset

SPLITS = {"train": 2, "test": 1}
SIZE = (120, 160)


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    return write_dataset("nyuv2", tmp_path_factory.mktemp("nyu"), SPLITS, SIZE, seed=2)


def angle_deg(a, b):
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def test_file_is_matlab_v73_with_reversed_axes(nyu_root):
    path = nyu_root / "nyu_depth_v2_labeled.mat"
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        assert f["images"].shape == (3, 3, 160, 120) and f["images"].dtype == np.uint8
        assert f["depths"].shape == (3, 160, 120) and f["labels"].dtype == np.uint16
        raw = f["labels"][...]
    mapping = scipy.io.loadmat(nyu_root / "classMapping40.mat")["mapClass"].ravel()
    assert mapping.shape == (894,) and set(np.unique(mapping)) == set(range(1, 41))
    labelled = raw[raw > 0]
    assert labelled.max() > 40  # raw ids are not the class ids: the mapping is exercised
    assert not np.array_equal(mapping[labelled - 1], labelled)


def test_round_trip_against_generator(nyu_root):
    reader = get_reader("nyuv2", nyu_root)
    assert reader.name == "nyuv2" and set(reader.tasks) == {"semantic", "depth", "normals"}
    assert reader.class_names()[0] == "wall" and reader.class_names()[21] == "ceiling" and len(reader.class_names()) == 40
    plans = planned_scenes("nyuv2", SPLITS, SIZE, 2)
    for split in ("train", "test"):
        assert reader.sample_ids(split) == [p.sample_id for p in plans if p.split == split]
    region = np.zeros(SIZE, bool)
    region[11:118, 10:150] = True  # rows 44:471, cols 40:601 at 480 x 640, scaled by 1/4
    for plan in plans:
        sample = reader.read(plan.split, plan.sample_id)
        scene = plan.render()
        assert np.array_equal(sample.image, scene.image)
        expected = np.array([ROOM_TO_NYU40[c] for c in scene.class_names], np.uint8)[scene.semantic]
        expected[scene.boundaries > 0] = 255  # the writer leaves raw label 0 on boundaries
        assert np.array_equal(sample.semantic, expected)
        assert np.array_equal(sample.depth_valid, region)
        assert np.allclose(sample.depth[region], scene.depth[region], rtol=1e-6)
        assert np.all(sample.depth[~region] == 0)
        # Normals from depth vs the renderer's exact normals, on surfaces at least 10 px
        # from any boundary or crease (box edges) and seen within 60 degrees of head-on (at grazing angles the 5%
        # depth gate leaves too few rows for a plane fit at this small size).
        fx, fy, cx, cy = 518.857901 / 4, 519.469611 / 4, 325.582449 / 4, 253.736166 / 4
        v, u = np.mgrid[0:SIZE[0], 0:SIZE[1]]
        ray = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones(SIZE)], -1)
        facing = -(scene.normals * ray).sum(-1) / np.linalg.norm(ray, axis=-1) > 0.5
        n = scene.normals
        crease = np.zeros(SIZE, bool)
        crease[:, :-1] |= (n[:, :-1] * n[:, 1:]).sum(-1) < 0.9998
        crease[:-1] |= (n[:-1] * n[1:]).sum(-1) < 0.9998
        far = ndimage.distance_transform_edt((scene.boundaries == 0) & ~crease) > 9
        flat = far & facing & region & sample.normals_valid
        assert flat.sum() > 1500
        errors = angle_deg(sample.normals[flat], scene.normals[flat])
        assert np.median(errors) < 0.5 and np.mean(errors < 1.0) > 0.97
        assert not sample.normals_valid[~region].any()


def write_small(root, labels_t, map_class, key_labels="labels", depth_shape=None):
    """A hand-made NYUv2 trio: 2 images of 2 x 3, MATLAB axis order (N, C, W, H)."""
    root.mkdir(parents=True, exist_ok=True)
    img = np.arange(2 * 3 * 3 * 2, dtype=np.uint8).reshape(2, 3, 3, 2)  # (N, C, W=3, H=2)
    depth = np.arange(1, 13, dtype=np.float32).reshape(2, 3, 2) if depth_shape is None else np.ones(depth_shape, np.float32)
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w") as f:
        f["images"] = img
        f["depths"] = depth
        f[key_labels] = labels_t
    scipy.io.savemat(root / "splits.mat", {"trainNdxs": np.array([[2.0]]), "testNdxs": np.array([[1.0]])})
    scipy.io.savemat(root / "classMapping40.mat", {"mapClass": np.asarray(map_class, float).reshape(1, -1)})
    return img


def hand_mapping():
    m = np.ones(894)
    m[4], m[893], m[99] = 12, 40, 0  # raw 5 -> class 11, raw 894 -> 39, raw 100 -> unlabeled
    return m


def test_hand_made_file_decodes_axes_and_mapping(tmp_path):
    # Image 2 (1-based) seen in MATLAB as H x W = 2 x 3 with raw labels [[0, 5, 894], [100, 1, 5]].
    labels_t = np.zeros((2, 3, 2), np.uint16)
    labels_t[1] = np.array([[0, 5, 894], [100, 1, 5]]).T
    img = write_small(tmp_path, labels_t, hand_mapping())
    reader = NYUv2Reader(tmp_path, intrinsics=(2.0, 2.0, 1.0, 0.5), valid_region=False)
    assert reader.sample_ids("train") == ["0002"] and reader.sample_ids("test") == ["0001"]
    sample = reader.read("train", "0002")
    assert sample.semantic.tolist() == [[255, 11, 39], [255, 0, 11]]
    assert sample.image.shape == (2, 3, 3)
    assert sample.image[1, 2].tolist() == [img[1, 0, 2, 1], img[1, 1, 2, 1], img[1, 2, 2, 1]]
    assert sample.depth.tolist() == [[7, 9, 11], [8, 10, 12]]


def test_label_out_of_range(tmp_path):
    labels_t = np.full((2, 3, 2), 900, np.uint16)
    write_small(tmp_path, labels_t, hand_mapping())
    with pytest.raises(DatasetError, match="label 900 out of range") as err:
        NYUv2Reader(tmp_path).read("test", "0001")
    assert err.value.path.endswith("nyu_depth_v2_labeled.mat")


def test_wrong_key(tmp_path):
    write_small(tmp_path, np.zeros((2, 3, 2), np.uint16), hand_mapping(), key_labels="labelz")
    with pytest.raises(DatasetError, match=r"missing key\(s\) \['labels'\]"):
        NYUv2Reader(tmp_path).read("test", "0001")


def test_mismatched_sizes(tmp_path):
    write_small(tmp_path, np.zeros((2, 3, 2), np.uint16), hand_mapping(), depth_shape=(2, 4, 2))
    with pytest.raises(DatasetError, match=r"depths\[1\] is \(2, 4\)"):
        NYUv2Reader(tmp_path).read("test", "0001")


def test_v5_file_instead_of_hdf5_and_missing_splits(tmp_path):
    scipy.io.savemat(tmp_path / "nyu_depth_v2_labeled.mat", {"images": np.zeros((1, 3, 2, 2))})
    scipy.io.savemat(tmp_path / "classMapping40.mat", {"mapClass": hand_mapping().reshape(1, -1)})
    with pytest.raises(DatasetError, match="not a MATLAB v7.3"):
        NYUv2Reader(tmp_path).read("train", "0001")
    with pytest.raises(DatasetError, match=r"splits\.mat: file not found"):
        NYUv2Reader(tmp_path).sample_ids("train")


def test_bad_class_mapping(tmp_path):
    m = hand_mapping()
    m[3] = 41
    write_small(tmp_path, np.zeros((2, 3, 2), np.uint16), m)
    with pytest.raises(DatasetError, match=r"classMapping40\.mat: mapClass values 0\.\.41"):
        NYUv2Reader(tmp_path).read("test", "0001")


def test_reader_pickles_for_ray_workers_and_rejects_bad_ids(nyu_root):
    import pickle

    reader = NYUv2Reader(nyu_root)
    first = reader.sample_ids("train")[0]
    before = reader.read("train", first)  # fills the reader's caches
    clone = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(clone.read("train", first).semantic, before.semantic)
    with pytest.raises(DatasetError, match="not a 1-based image index"):
        reader.read("train", "abc")
    with pytest.raises(DatasetError, match="image index 99 out of range 1..3"):
        reader.read("train", "0099")


def test_frame_counts_must_agree(tmp_path):
    write_small(tmp_path, np.zeros((1, 3, 2), np.uint16), hand_mapping())  # 1 label map, 2 images
    with pytest.raises(DatasetError, match="different numbers of frames"):
        NYUv2Reader(tmp_path).read("train", "0002")
