"""Augmentation, torch collation and the Ray Data pipeline (local Ray, Ray Train, moto S3).

The toy samples code every pixel with its source row and column (tests/support/toy_dataset),
so each check below recomputes from the output alone where a pixel came from.
"""
from __future__ import annotations

import json
import shutil
import tempfile

import numpy as np
import pytest
import ray
import torch

from pipelines.datasets import augment, convert, ray_pipeline, shards
from pipelines.datasets.schema import IGNORE, IMAGENET_MEAN, IMAGENET_STD
from tests.support.s3 import s3_server  # noqa: F401
from tests.support.toy_dataset import NORMAL, ListReader, make_sample

H, W = 40, 56
CROP = (32, 48)
ALL_TASKS = ("semantic", "depth", "normals", "boundary")
MEAN_RGB = [round(255 * m) for m in IMAGENET_MEAN]


# ---------------------------------------------------------------- augmentation (no Ray)


def test_flip_mirrors_every_field_and_negates_normal_x() -> None:
    normals = np.array([[[0.1, 0.2, 0.9], [-0.3, 0.4, 0.8], [0.5, -0.6, 0.7]]], np.float32)  # (1, 3, 3)
    sample = {
        "image": np.arange(9, dtype=np.uint8).reshape(1, 3, 3),
        "semantic": np.array([[0, 1, 2]], np.uint8),
        "normals": normals,
        "boundary_annotators": np.array([[[1, 0, 0]], [[0, 0, 1]]], np.uint8),  # (K=2, 1, 3)
        "sample_id": "x",
    }
    out = augment.hflip(sample)
    assert out["image"].tolist() == [[[6, 7, 8], [3, 4, 5], [0, 1, 2]]]
    assert out["semantic"].tolist() == [[2, 1, 0]]
    expected = [[[-0.5, -0.6, 0.7], [0.3, 0.4, 0.8], [-0.1, 0.2, 0.9]]]
    np.testing.assert_allclose(out["normals"], expected)
    assert out["boundary_annotators"].tolist() == [[[0, 0, 1]], [[1, 0, 0]]]
    assert out["sample_id"] == "x"
    np.testing.assert_array_equal(sample["normals"], normals)  # the input is not modified


def _naive_crop(array: np.ndarray, top: int, left: int, size: tuple[int, int], pad) -> np.ndarray:
    """Pad by 100 pixels on every side, then slice: the definition of an overhanging crop."""
    widths = [(100, 100), (100, 100)] + [(0, 0)] * (array.ndim - 2)
    padded = np.full([n + sum(w) for n, w in zip(array.shape, widths)], pad, dtype=array.dtype)
    padded[100:100 + array.shape[0], 100:100 + array.shape[1]] = array
    return padded[100 + top:100 + top + size[0], 100 + left:100 + left + size[1]]


def test_crop_windows_stay_inside_the_margin_and_reach_both_ends() -> None:
    rng = np.random.default_rng(0)
    sample = make_sample(1)
    arrays = {k: getattr(sample, k) for k in ("image", "semantic", "depth", "depth_valid", "normals")}
    tops, lefts = [], []
    for _ in range(400):
        top, left = augment.crop_window((H, W), CROP, rng)
        tops.append(top)
        lefts.append(left)
    assert min(tops) == -20 and max(tops) == H - CROP[0] + 20
    assert min(lefts) == -20 and max(lefts) == W - CROP[1] + 20
    for top, left in [(-20, -20), (3, 5), (H - CROP[0] + 20, W - CROP[1] + 20)]:
        out = augment.crop(arrays, top, left, CROP)
        for key, value in arrays.items():
            pad = MEAN_RGB if key == "image" else augment.PAD_VALUES[key]
            np.testing.assert_array_equal(out[key], _naive_crop(value, top, left, CROP, pad), err_msg=key)
    corner = augment.crop(arrays, -20, -20, CROP)
    assert corner["semantic"][0, 0] == IGNORE and not corner["depth_valid"][0, 0]
    assert corner["image"][0, 0].tolist() == [124, 116, 104]


def test_crop_sizes_must_be_multiples_of_8_and_fit() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"crop size \(30, 48\) must be positive multiples of 8"):
        augment.crop_window((H, W), (30, 48), rng)
    with pytest.raises(ValueError, match=r"crop \(88, 48\) does not fit image \(40, 56\)"):
        augment.crop_window((H, W), (88, 48), rng)
    augment.crop_window((H, W), (80, 96), rng)  # exactly image + 2 * margin


def test_to_torch_batch_layout_and_normalisation() -> None:
    image = np.zeros((2, 4, 8, 3), np.uint8)
    image[1, 2, 3] = (255, 0, 128)
    normals = np.zeros((2, 4, 8, 3), np.float32)
    normals[1, 2, 3] = (0.6, 0.0, -0.8)
    batch = {
        "sample_id": np.array(["a", "b"]),
        "image": image,
        "semantic": np.full((2, 4, 8), 7, np.uint8),
        "depth": np.ones((2, 4, 8), np.float32),
        "depth_valid": np.ones((2, 4, 8), bool),
        "normals": normals,
        "normals_valid": np.ones((2, 4, 8), bool),
        "boundary": np.full((2, 4, 8), IGNORE, np.uint8),
    }
    out = ray_pipeline.to_torch_batch(batch)
    assert "sample_id" not in out
    assert out["image"].shape == (2, 3, 4, 8) and out["image"].dtype == torch.float32
    expected = [(1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], (0.0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1],
                (128 / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2]]
    assert out["image"][1, :, 2, 3].tolist() == pytest.approx(expected, rel=1e-6)
    assert out["normals"].shape == (2, 3, 4, 8) and out["normals"][1, :, 2, 3].tolist() == pytest.approx([0.6, 0, -0.8])
    assert out["semantic"].dtype == torch.int64 and out["boundary"].dtype == torch.int64
    assert int(out["boundary"][0, 0, 0]) == 255
    assert out["depth_valid"].dtype == torch.bool and out["depth"].dtype == torch.float32
    ragged = {"image": np.array([np.zeros((4, 8, 3), np.uint8), np.zeros((8, 4, 3), np.uint8)], dtype=object)}
    with pytest.raises(ValueError, match="shapes .* use batch_size=1"):
        ray_pipeline.to_torch_batch(ragged)


def test_pipeline_fails_early_naming_the_path(tmp_path) -> None:
    with pytest.raises(shards.ShardError, match=f"{tmp_path}/manifest.json: no manifest"):
        ray_pipeline.train_dataset(str(tmp_path), "train", CROP, ["semantic"])
    sample = make_sample(1)
    sample.depth = sample.depth_valid = None
    reader = ListReader({"train": [sample], "val": []})
    convert.convert_reader(reader, str(tmp_path))
    with pytest.raises(shards.ShardError, match=r"split 'train' of 'toy' lacks \['depth', 'depth_valid'\]"):
        ray_pipeline.train_dataset(str(tmp_path), "train", CROP, ["depth"])
    with pytest.raises(ValueError, match="unknown task .segmentation.; allowed: boundary, semantic, depth, normals"):
        ray_pipeline.train_dataset(str(tmp_path), "train", CROP, ["segmentation"])
    with pytest.raises(ValueError, match="multiples of 8"):
        ray_pipeline.train_dataset(str(tmp_path), "train", (33, 48), ["semantic"])


# ---------------------------------------------------------------- Ray Data (slow)


@pytest.fixture(scope="module")
def local_ray():
    temp_dir = tempfile.mkdtemp(prefix="rb2", dir="/tmp")  # short: Ray's socket paths
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=300 * 2**20,
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def toy_shards(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("shards"))
    reader = ListReader({"train": [make_sample(i) for i in range(12)],
                         "val": [make_sample(i, split="val") for i in range(3)]})
    one_row = sum(len(v) for v in shards.encode_sample(make_sample(0)).values() if isinstance(v, bytes))
    convert.convert_reader(reader, out, shard_mb=2.5 * one_row / 2**20)  # 3 rows per shard
    return out


def _check_train_row(row: dict) -> bool:
    """Recompute crop window and flip from the codes; return whether the row was flipped."""
    index = int(str(row["sample_id"]).split("-")[1])
    depth = row["depth"]
    inside = depth != 0  # every source pixel has depth >= 0.5; padding is 0
    src_row = (depth // 1000).astype(int)
    src_col = np.round(depth % 1000 - 0.5).astype(int)
    image = row["image"].astype(int)
    assert image.shape == (*CROP, 3)
    np.testing.assert_array_equal(image[inside][:, 0], src_row[inside])
    np.testing.assert_array_equal(image[inside][:, 1], src_col[inside])
    assert (image[inside][:, 2] == 10 * index).all()
    assert (image[~inside] == MEAN_RGB).all()
    np.testing.assert_array_equal(row["semantic"][inside], (src_row + src_col + index)[inside] % 3)
    assert (row["semantic"][~inside] == IGNORE).all() and not row["depth_valid"][~inside].any()
    np.testing.assert_array_equal(row["depth_valid"][inside], src_row[inside] != 0)
    np.testing.assert_array_equal(row["normals_valid"][inside], src_col[inside] != 0)
    r, c = np.argwhere(inside)[0]
    cols = src_col[r][inside[r]]
    flipped = bool(len(cols) > 1 and cols[1] < cols[0])
    top = src_row[r, c] - r
    left = (W - 1 - src_col[r, c] - c) if flipped else (src_col[r, c] - c)
    assert -20 <= top <= H - CROP[0] + 20 and -20 <= left <= W - CROP[1] + 20
    rows_idx, cols_idx = np.nonzero(inside)
    expected_col = (W - 1 - (left + cols_idx)) if flipped else (left + cols_idx)
    np.testing.assert_array_equal(src_row[inside], top + rows_idx)
    np.testing.assert_array_equal(src_col[inside], expected_col)
    normal_x = row["normals"][..., 0][row["normals_valid"]]
    assert np.allclose(normal_x, -NORMAL[0] if flipped else NORMAL[0])
    return flipped


@pytest.mark.slow
def test_train_batches_are_flipped_and_cropped_views_of_the_source(local_ray, toy_shards) -> None:
    ds = ray_pipeline.train_dataset(toy_shards, "train", CROP, ALL_TASKS, seed=3)
    flips = []
    for _ in range(2):
        for batch in ds.iter_batches(batch_size=4, batch_format="numpy"):
            for i in range(len(batch["sample_id"])):
                flips.append(_check_train_row({k: v[i] for k, v in batch.items()}))
    assert len(flips) == 24 and any(flips) and not all(flips)
    torch_batch = next(iter(ds.iter_torch_batches(batch_size=4, collate_fn=ray_pipeline.TorchCollate())))
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in torch_batch.items()}
    assert shapes == {
        "image": ((4, 3, 32, 48), torch.float32),
        "semantic": ((4, 32, 48), torch.int64),
        "depth": ((4, 32, 48), torch.float32),
        "depth_valid": ((4, 32, 48), torch.bool),
        "normals": ((4, 3, 32, 48), torch.float32),
        "normals_valid": ((4, 32, 48), torch.bool),
        "boundary": ((4, 32, 48), torch.int64),
    }


@pytest.mark.slow
def test_every_epoch_is_a_new_permutation(local_ray, toy_shards) -> None:
    ds = ray_pipeline.train_dataset(toy_shards, "train", CROP, ["semantic"], seed=0)
    orders = []
    for _ in range(3):
        orders.append([str(s) for b in ds.iter_batches(batch_size=5) for s in b["sample_id"]])
    everything = [f"train-{i:02d}" for i in range(12)]
    assert all(sorted(order) == everything for order in orders)
    assert len({tuple(order) for order in orders}) == 3


def _train_loop(config: dict) -> None:
    """Record, per epoch, the sample ids this worker saw; then one torch batch's shapes."""
    import ray.train

    from pipelines.datasets.ray_pipeline import TorchCollate

    rank = ray.train.get_context().get_world_rank()
    shard = ray.train.get_dataset_shard("train")
    seen = []
    for _ in range(2):
        seen.append([str(s) for b in shard.iter_batches(batch_size=2) for s in b["sample_id"]])
    batch = next(iter(shard.iter_torch_batches(batch_size=2, collate_fn=TorchCollate())))
    record = {"epochs": seen, "image": list(batch["image"].shape), "semantic": list(batch["semantic"].shape)}
    with open(f"{config['out']}/rank{rank}.json", "w") as f:
        json.dump(record, f)
    ray.train.report({"samples": len(seen[0])})


@pytest.mark.slow
def test_two_train_workers_with_fractional_cpus_get_disjoint_shards(local_ray, toy_shards, tmp_path) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = ray_pipeline.DataResources(cpu=1.0, object_store_bytes=200 * 2**20)
    ds = ray_pipeline.train_dataset(toy_shards, "train", CROP, ["semantic"], resources=resources)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"out": str(tmp_path)},
        datasets={"train": ds},
        dataset_config=ray_pipeline.data_config(resources),
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name="b2-disjoint", storage_path=str(tmp_path / "runs")),
    )
    trainer.fit()
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    everything = {f"train-{i:02d}" for i in range(12)}
    for epoch in range(2):
        a, b = (set(rec["epochs"][epoch]) for rec in records)
        assert len(a) == len(b) == 6 and not a & b and a | b == everything
    assert any(rec["epochs"][0] != rec["epochs"][1] for rec in records)
    assert records[0]["image"] == [2, 3, 32, 48] and records[0]["semantic"] == [2, 32, 48]
