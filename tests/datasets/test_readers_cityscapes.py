"""Cityscapes reader on generated frames and on hand-made files with known values."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipelines.datasets.cityscapes import CityscapesReader
from pipelines.datasets.errors import DatasetError
from pipelines.datasets.readers import get_reader
from pipelines.datasets.write_formats import planned_scenes, write_dataset

SPLITS = {"train": 2, "val": 1, "test": 1}
SIZE = (64, 128)
# The generator's street classes as Cityscapes trainIds (from the published label table).
TRAIN_ID = {"road": 0, "sidewalk": 1, "building": 2, "vegetation": 8, "sky": 10, "person": 11, "car": 13}
LABEL_ID = {"person": 24, "car": 26}


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
    return write_dataset("cityscapes", tmp_path_factory.mktemp("city"), SPLITS, SIZE, seed=4)


def test_layout_and_ids(city_root):
    reader = get_reader("cityscapes", city_root)
    assert reader.name == "cityscapes" and set(reader.tasks) == {"semantic", "depth"}
    assert reader.splits() == ["train", "val", "test"] and len(reader.class_names()) == 19
    assert reader.sample_ids("train") == ["aachen_000000_000019", "aachen_000001_000019"]
    for folder, suffix in (("leftImg8bit", "leftImg8bit.png"), ("gtFine", "gtFine_labelIds.png"),
                           ("gtFine", "gtFine_instanceIds.png"), ("disparity", "disparity.png"), ("camera", "camera.json")):
        assert (city_root / folder / "val" / "frankfurt" / f"frankfurt_000000_000019_{suffix}").is_file()


def test_round_trip_against_generator(city_root):
    reader = CityscapesReader(city_root)
    for plan in planned_scenes("cityscapes", SPLITS, SIZE, 4):
        sample = reader.read(plan.split, plan.sample_id)
        scene = plan.render()
        ego = np.zeros(SIZE, bool)
        ego[-5:] = True  # 8% of 64 rows, labelled ego vehicle (ignored) by the writer
        expected = np.array([TRAIN_ID[c] for c in scene.class_names], np.uint8)[scene.semantic]
        expected[ego] = 255
        assert np.array_equal(sample.semantic, expected)
        assert np.array_equal(sample.image[~ego], scene.image[~ego])
        # Instances: each car / person segment one id labelId*1000+k, distinct per segment.
        for cls, label_id in LABEL_ID.items():
            where = (scene.semantic == scene.class_names.index(cls)) & ~ego
            ids = sample.instances[where]
            assert np.all(ids // 1000 == label_id)
            assert len(np.unique(ids)) == len(np.unique(scene.segments[where]))
        assert np.all(sample.instances[expected == 2] == 11)  # building is stuff: labelId
        # Depth within the 1/256 disparity quantisation: dz = z^2 / (B fx) * (0.5 / 256).
        valid = scene.valid & ~ego
        assert np.array_equal(sample.depth_valid, valid)
        fx = 2262.52 * SIZE[1] / 2048
        z = scene.depth[valid].astype(np.float64)
        bound = z**2 / (0.209313 * fx) * (0.5 / 256) * 1.01 + 1e-4
        assert np.all(np.abs(sample.depth[valid] - z) <= bound)
        assert np.all(sample.depth[~valid] == 0)


def write_frame(root, label_ids, disparity, camera, instance=None, split="train", city="ulm"):
    stem = f"{city}_000001_000002"
    h, w = label_ids.shape
    parts = {"leftImg8bit": (f"{stem}_leftImg8bit.png", np.zeros((h, w, 3), np.uint8)),
             "gtFine": (f"{stem}_gtFine_labelIds.png", label_ids),
             "disparity": (f"{stem}_disparity.png", disparity)}
    for folder, (name, array) in parts.items():
        (root / folder / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / folder / split / city / name)
    inst = label_ids.astype(np.uint16) if instance is None else instance
    Image.fromarray(inst).save(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png")
    (root / "camera" / split / city).mkdir(parents=True, exist_ok=True)
    (root / "camera" / split / city / f"{stem}_camera.json").write_text(json.dumps(camera))
    return stem


CAMERA = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 1000.0}}


def test_hand_made_values(tmp_path):
    label_ids = np.array([[7, 26, 4], [33, 0, 24]], np.uint8)
    disparity = np.array([[257, 0, 1], [513, 2, 65535]], np.uint16)
    instance = np.array([[7, 26003, 4], [33, 0, 24001]], np.uint16)
    stem = write_frame(tmp_path, label_ids, disparity, CAMERA, instance)
    sample = CityscapesReader(tmp_path).read("train", stem)
    assert sample.semantic.tolist() == [[0, 13, 255], [18, 255, 11]]
    assert sample.instances.tolist() == [[7, 26003, 4], [33, 0, 24001]]
    # d = (p - 1) / 256; depth = 0.2 * 1000 / d
    expected = [[200.0, 0.0, 0.0], [100.0, 200.0 * 256, 0.2 * 1000 / (65534 / 256)]]
    assert np.allclose(sample.depth, expected, rtol=1e-6)
    assert sample.depth_valid.tolist() == [[True, False, False], [True, True, True]]


def test_label_out_of_range(tmp_path):
    stem = write_frame(tmp_path, np.array([[7, 40]], np.uint8), np.zeros((1, 2), np.uint16), CAMERA)
    with pytest.raises(DatasetError, match="labelId 40 out of range 0..33") as err:
        CityscapesReader(tmp_path).read("train", stem)
    assert err.value.path.endswith("_gtFine_labelIds.png")


def test_camera_json_errors(tmp_path):
    stem = write_frame(tmp_path, np.array([[7, 8]], np.uint8), np.ones((1, 2), np.uint16), {"extrinsic": {}, "intrinsic": {"fx": 1.0}})
    with pytest.raises(DatasetError, match="extrinsic.baseline"):
        CityscapesReader(tmp_path).read("train", stem)
    camera = tmp_path / "camera" / "train" / "ulm" / f"{stem}_camera.json"
    camera.unlink()
    with pytest.raises(DatasetError, match="file not found") as err:
        CityscapesReader(tmp_path).read("train", stem)
    assert err.value.path == str(camera)
    assert CityscapesReader(tmp_path, depth=False).read("train", stem).depth is None


def test_mismatched_size_and_truncated_image(tmp_path):
    stem = write_frame(tmp_path, np.array([[7, 8]], np.uint8), np.zeros((1, 3), np.uint16), CAMERA)
    with pytest.raises(DatasetError, match=r"disparity is \(1, 3\), expected \(1, 2\)"):
        CityscapesReader(tmp_path).read("train", stem)
    image = tmp_path / "leftImg8bit" / "train" / "ulm" / f"{stem}_leftImg8bit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(image)
    image.write_bytes(image.read_bytes()[:400])
    with pytest.raises(DatasetError, match="cannot decode image"):
        CityscapesReader(tmp_path).read("train", stem)


def test_not_a_cityscapes_tree(tmp_path):
    with pytest.raises(DatasetError, match="expected leftImg8bit/"):
        CityscapesReader(tmp_path)


def test_generator_command_line_writes_a_readable_tree(tmp_path, capsys):
    from pipelines.datasets.write_formats import main

    root = main(["--dataset", "cityscapes", "--out", str(tmp_path / "c"), "--split", "val=2", "--size", "16x32", "--seed", "3"])
    assert capsys.readouterr().out.strip() == str(root)
    reader = CityscapesReader(root)
    assert reader.splits() == ["val"] and len(reader.sample_ids("val")) == 2
    assert reader.read("val", reader.sample_ids("val")[1]).image.shape == (16, 32, 3)
    with pytest.raises(SystemExit):
        main(["--dataset", "cityscapes", "--out", str(tmp_path / "d"), "--split", "extra=1"])
    with pytest.raises(ValueError, match="asks for no scenes"):
        write_dataset("nyuv2", tmp_path / "e", {"train": 0})
