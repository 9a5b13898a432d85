"""Stanford-2D-3D reader on generated panoramas and on hand-made files with known values."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines.datasets.encoders import ROOM_TO_S2D3D
from pipelines.datasets.errors import DatasetError
from pipelines.datasets.readers import get_reader
from pipelines.datasets.stanford2d3d import CLASSES_13, Stanford2D3DReader
from pipelines.datasets.write_formats import planned_scenes, write_dataset

SPLITS = {"train": 2, "val": 2}
SIZE = (128, 256)


@pytest.fixture(scope="module")
def s2d3d_root(tmp_path_factory):
    return write_dataset("stanford2d3d", tmp_path_factory.mktemp("s2d3d"), SPLITS, SIZE, seed=5)


def angle_deg(a, b):
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def expected_crop(array):
    """Paper preprocessing by hand for a 128-row panorama: every 2nd pixel (0.5 rescale),
    then rows 160/1024 .. 864/1024 of the 64 rescaled rows = rows 10..53."""
    return array[::2, ::2][10:54]


def test_layout_and_splits(s2d3d_root):
    reader = get_reader("stanford2d3d", s2d3d_root)
    assert reader.name == "stanford2d3d" and set(reader.tasks) == {"semantic", "depth", "normals"}
    assert reader.splits() == ["train", "val"] and reader.class_names() == list(CLASSES_13)
    val = reader.sample_ids("val")
    assert len(val) == 2 and all(i.split("/")[0] in ("area_3", "area_4") for i in val)
    train = reader.sample_ids("train")
    assert len(train) == 2 and all(i.split("/")[0] in ("area_1", "area_2") for i in train)
    area, stem = val[0].split("/")
    for folder, suffix in (("rgb", "rgb"), ("depth", "depth"), ("normal", "normals"), ("semantic", "semantic")):
        assert (s2d3d_root / area / "pano" / folder / f"{stem}_{suffix}.png").is_file()
    assert stem.startswith("camera_") and stem.endswith("_frame_equirectangular_domain")


@pytest.mark.parametrize("with_csv", [False, True])
def test_round_trip_against_generator(s2d3d_root, tmp_path, with_csv):
    plans = planned_scenes("stanford2d3d", SPLITS, SIZE, 5)
    csv = None
    if with_csv:
        csv = tmp_path / "angles.csv"
        csv.write_text("sample_id,theta0\n" + "".join(f"{p.sample_id},{p.render().theta0!r}\n" for p in plans))
    reader = Stanford2D3DReader(s2d3d_root, reference_angles=csv)
    for plan in plans:
        sample = reader.read(plan.split, plan.sample_id)
        scene = plan.render()
        assert sample.image.shape == (44, 128, 3)
        blocks = scene.image.astype(float).reshape(64, 2, 128, 2, 3).mean(axis=(1, 3))[10:54]
        assert np.abs(sample.image - blocks).max() <= 0.5 + 1e-9
        valid = expected_crop(scene.valid)
        assert np.array_equal(sample.depth_valid, valid) and np.array_equal(sample.normals_valid, valid)
        assert np.abs(sample.depth - expected_crop(scene.depth))[valid].max() <= 1 / 1024 + 1e-6
        names = [ROOM_TO_S2D3D[c] for c in scene.class_names]
        lut = np.array([CLASSES_13.index(n) for n in names] + [255] * (256 - len(names)), np.uint8)
        assert np.array_equal(sample.semantic, lut[expected_crop(scene.semantic)])
        errors = angle_deg(sample.normals, expected_crop(scene.normals_local))[valid]
        assert errors.max() < (0.8 if with_csv else 2.0)  # 8-bit encoding; + angle estimate


def write_pano(root, rgb, depth, normals, semantic, labels, area="area_1", stem="camera_x_office_1_0_frame_equirectangular_domain"):
    pano = root / area / "pano"
    for folder, suffix, array in (("rgb", "rgb", rgb), ("depth", "depth", depth), ("normal", "normals", normals), ("semantic", "semantic", semantic)):
        (pano / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(pano / folder / f"{stem}_{suffix}.png")
    (root / "assets").mkdir(exist_ok=True)
    (root / "assets" / "semantic_labels.json").write_text(json.dumps(labels))
    return f"{area}/{stem}"


def hand_pano(shape=(1, 4)):
    rgb = np.full(shape + (3,), 50, np.uint8)
    depth = np.array([[1024, 65535, 256, 512]], np.uint16)[:, : shape[1]]
    normals = np.array([[[255, 128, 128], [128, 128, 128], [0, 128, 128], [128, 255, 128]]], np.uint8)[:, : shape[1]]
    # indices 1 (wall), 2 (<UNK>-like unknown class), 0x0D0D0D (void, past the list), 3 (chair)
    semantic = np.array([[[0, 0, 1], [0, 0, 2], [13, 13, 13], [0, 0, 3]]], np.uint8)[:, : shape[1]]
    labels = ["<UNK>_0_<UNK>_0_0", "wall_1_office_1_1", "stairs_1_office_1_1", "chair_2_office_1_1"]
    return rgb, depth, normals, semantic, labels


def test_hand_made_values(tmp_path):
    sample_id = write_pano(tmp_path, *hand_pano())
    csv = tmp_path / "angles.csv"
    csv.write_text(f"sample_id,theta0\n{sample_id},0.0\n")
    reader = Stanford2D3DReader(tmp_path, rescale=1, keep_rows=(0.0, 1.0), reference_angles=csv)
    sample = reader.read("train", sample_id)
    assert sample.depth.tolist() == [[2.0, 0.0, 0.5, 1.0]]
    assert sample.depth_valid.tolist() == [[True, False, True, True]]
    assert sample.semantic.tolist() == [[11, 255, 255, 4]]
    assert sample.normals_valid.tolist() == [[True, False, True, True]]
    # (v - 127.5) / 127.5 then unit length, then rotated by 2 pi col / 4 (theta0 = 0):
    # col 0: (1, .0039, .0039) -> same; col 2: (-1, .0039, .0039) rotated 180 deg -> (1, -.0039, .0039);
    # col 3: (.0039, 1, .0039) rotated 270 deg -> (1, -.0039, .0039).
    e = 0.5 / 127.5
    unit = np.array([1.0, e, e]) / np.linalg.norm([1.0, e, e])
    assert np.allclose(sample.normals[0, 0], unit, atol=1e-6)
    assert np.allclose(sample.normals[0, 2], unit * [1, -1, 1], atol=1e-6)
    assert np.allclose(sample.normals[0, 3], unit * [1, -1, 1], atol=1e-6)
    assert np.all(sample.normals[0, 1] == 0)


def test_missing_file_and_mismatched_size(tmp_path):
    rgb, depth, normals, semantic, labels = hand_pano()
    sample_id = write_pano(tmp_path, rgb, depth, normals, semantic, labels)
    reader = Stanford2D3DReader(tmp_path, rescale=1, keep_rows=(0.0, 1.0))
    depth_png = tmp_path / "area_1" / "pano" / "depth" / f"{sample_id.split('/')[1]}_depth.png"
    Image.fromarray(np.zeros((1, 3), np.uint16)).save(depth_png)
    with pytest.raises(DatasetError, match=r"depth is \(1, 3\), expected \(1, 4\)") as err:
        reader.read("train", sample_id)
    assert err.value.path == str(depth_png)
    depth_png.unlink()
    with pytest.raises(DatasetError, match="file not found"):
        reader.read("train", sample_id)


def test_truncated_png_and_csv_without_row(tmp_path):
    rgb, depth, normals, semantic, labels = hand_pano()
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    sample_id = write_pano(tmp_path, rgb, np.zeros((64, 64), np.uint16), np.zeros((64, 64, 3), np.uint8),
                           np.zeros((64, 64, 3), np.uint8), labels)
    csv = tmp_path / "angles.csv"
    csv.write_text("sample_id,theta0\nother,1.0\n")
    with pytest.raises(DatasetError, match="no row for"):
        Stanford2D3DReader(tmp_path, reference_angles=csv).read("train", sample_id)
    png = tmp_path / "area_1" / "pano" / "rgb" / f"{sample_id.split('/')[1]}_rgb.png"
    png.write_bytes(png.read_bytes()[:300])
    with pytest.raises(DatasetError, match="cannot decode image"):
        Stanford2D3DReader(tmp_path).read("train", sample_id)


def test_bad_labels_json_and_rescale(tmp_path):
    rgb, depth, normals, semantic, _ = hand_pano()
    sample_id = write_pano(tmp_path, rgb, depth, normals, semantic, {"not": "a list"})
    with pytest.raises(DatasetError, match="semantic_labels.json: expected a JSON list"):
        Stanford2D3DReader(tmp_path, rescale=1, keep_rows=(0.0, 1.0)).read("train", sample_id)
    with pytest.raises(ValueError, match="rescale=0.3"):
        Stanford2D3DReader(tmp_path, rescale=0.3)


def test_reader_pickles_and_rejects_bad_ids(s2d3d_root):
    import pickle

    reader = Stanford2D3DReader(s2d3d_root)
    sample_id = reader.sample_ids("val")[0]
    before = reader.read("val", sample_id)
    clone = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(clone.read("val", sample_id).normals, before.normals)
    with pytest.raises(DatasetError, match="is not '<area>/<file stem>'"):
        reader.read("val", "no_area_here")
