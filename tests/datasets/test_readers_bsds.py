"""BSDS500 reader on generated files in the published layout, and on hand-made .mat files."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io
from PIL import Image

from pipelines.datasets.bsds import BSDSReader
from pipelines.datasets.encoders import bsds_annotators
from pipelines.datasets.errors import DatasetError
from pipelines.datasets.readers import READERS, get_reader
from pipelines.datasets.write_formats import annotator_seed, planned_scenes, write_dataset


@pytest.fixture(scope="module")
def bsds_root(tmp_path_factory):
    return write_dataset("bsds500", tmp_path_factory.mktemp("bsds"), {"train": 2, "val": 1, "test": 1}, size=(40, 56), seed=1)


def data_dir(root):
    return root / "BSR" / "BSDS500" / "data"


def save_gt(path, maps):
    """groundTruth .mat in the published layout from a list of Boundaries maps."""
    cell = np.empty((1, len(maps)), dtype=object)
    for k, m in enumerate(maps):
        cell[0, k] = {"Segmentation": np.ones_like(m, dtype=np.uint16), "Boundaries": np.asarray(m, np.uint8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"groundTruth": cell})


def test_reader_contract(bsds_root):
    reader = get_reader("bsds500", bsds_root)
    assert isinstance(reader, BSDSReader) and reader.name == "bsds500" and set(reader.tasks) == {"boundary"}
    assert reader.splits() == ["train", "val", "test"] and reader.class_names() == []
    (data_dir(bsds_root) / "images" / "train" / "Thumbs.db").write_bytes(b"junk")
    plans = planned_scenes("bsds500", {"train": 2, "val": 1, "test": 1}, (40, 56), 1)
    for split in reader.splits():
        assert reader.sample_ids(split) == sorted(p.sample_id for p in plans if p.split == split)


def test_round_trip_against_generator(bsds_root):
    reader = BSDSReader(bsds_root)
    for plan in planned_scenes("bsds500", {"train": 2, "val": 1, "test": 1}, (40, 56), 1):
        sample = reader.read(plan.split, plan.sample_id)
        scene = plan.render()
        assert sample.image.shape == (40, 56, 3)
        assert np.abs(sample.image.astype(int) - scene.image).mean() < 6  # JPEG, quality 95
        _, bounds = bsds_annotators(scene, annotator_seed(plan))
        assert np.array_equal(sample.boundary_annotators, bounds)
        # Training label rule, computed here pixel by pixel.
        k = len(bounds)
        for (r, c), votes in np.ndenumerate(bounds.sum(0)):
            expected = 0 if votes == 0 else (1 if votes / k >= 0.5 else 255)
            assert sample.boundary[r, c] == expected
        assert sample.source.endswith(f"{plan.sample_id}.jpg") and sample.split == plan.split


def test_label_from_hand_made_annotators(tmp_path):
    data = tmp_path / "BSR" / "BSDS500" / "data"
    (data / "images" / "test").mkdir(parents=True)
    Image.fromarray(np.full((2, 3, 3), 90, np.uint8)).save(data / "images" / "test" / "7.jpg")
    a = [[0, 1, 1], [0, 0, 1]]
    b = [[0, 0, 1], [1, 0, 1]]
    c = [[0, 0, 1], [0, 0, 0]]
    save_gt(data / "groundTruth" / "test" / "7.mat", [a, b, c])
    sample = BSDSReader(tmp_path).read("test", "7")
    # votes: [[0,1,3],[1,0,2]] of 3 -> 0, ignore, 1 / ignore, 0, 1
    assert sample.boundary.tolist() == [[0, 255, 1], [255, 0, 1]]
    assert sample.boundary_annotators.shape == (3, 2, 3)
    assert BSDSReader(data).sample_ids("test") == ["7"]  # root may be the data dir itself


def make_one(tmp_path, gt_maps=None, gt_dict=None, size=(4, 5)):
    data = tmp_path / "BSR" / "BSDS500" / "data"
    (data / "images" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros(size + (3,), np.uint8)).save(data / "images" / "train" / "1.jpg")
    gt = data / "groundTruth" / "train" / "1.mat"
    if gt_maps is not None:
        save_gt(gt, gt_maps)
    if gt_dict is not None:
        gt.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(gt, gt_dict)
    return BSDSReader(tmp_path), data


def test_missing_ground_truth(tmp_path):
    reader, data = make_one(tmp_path)
    with pytest.raises(DatasetError, match=r"1\.mat: file not found"):
        reader.read("train", "1")


def test_wrong_mat_key(tmp_path):
    reader, _ = make_one(tmp_path, gt_dict={"gt": np.zeros((4, 5))})
    with pytest.raises(DatasetError, match="groundTruth") as err:
        reader.read("train", "1")
    assert err.value.path.endswith("1.mat")


def test_truncated_image(tmp_path):
    reader, data = make_one(tmp_path, gt_maps=[np.zeros((40, 50))], size=(40, 50))
    jpg = data / "images" / "train" / "1.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])
    with pytest.raises(DatasetError, match="cannot decode image") as err:
        reader.read("train", "1")
    assert err.value.path == str(jpg)


def test_mismatched_sizes(tmp_path):
    reader, _ = make_one(tmp_path, gt_maps=[np.zeros((4, 6))])
    with pytest.raises(DatasetError, match=r"Boundaries is \(4, 6\), expected \(4, 5\)"):
        reader.read("train", "1")


def test_boundary_values_out_of_range(tmp_path):
    reader, _ = make_one(tmp_path, gt_maps=[np.full((4, 5), 2)])
    with pytest.raises(DatasetError, match="out of range"):
        reader.read("train", "1")


def test_unknown_split_and_dataset_name(bsds_root):
    with pytest.raises(DatasetError, match="no split 'extra'"):
        BSDSReader(bsds_root).sample_ids("extra")
    with pytest.raises(ValueError, match="bsds500.*cityscapes.*nyuv2.*stanford2d3d"):
        get_reader("coco", bsds_root)
    assert set(READERS) == {"bsds500", "nyuv2", "stanford2d3d", "cityscapes"}


def test_dataset_error_pickles_with_path_and_problem():
    err = pickle.loads(pickle.dumps(DatasetError("/x/a.png", "label 300 out of range")))
    assert (err.path, err.problem, str(err)) == ("/x/a.png", "label 300 out of range", "/x/a.png: label 300 out of range")
