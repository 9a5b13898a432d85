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

from pipelines.datasets import augment, convert, ray_pipeline, shard_rows, shards, wire
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


def test_random_flip_crop_is_a_mirror_then_a_window() -> None:
    """The fused flip + crop against its definition: np.flip, negate normal x, naive crop."""
    sample = make_sample(2)
    arrays = {k: getattr(sample, k) for k in ("image", "semantic", "depth", "depth_valid", "normals",
                                              "boundary_annotators")}
    flips = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        flip = rng.random() < 0.5  # the draws random_flip_crop makes, in its order
        top, left = augment.crop_window((H, W), CROP, rng)
        out = augment.random_flip_crop(arrays, CROP, np.random.default_rng(seed))
        flips.add(flip)
        for key, value in arrays.items():
            axis = 1 if key == "boundary_annotators" else 0
            source = np.flip(value, axis=axis + 1).copy() if flip else value.copy()
            if key == "normals" and flip:
                source[..., 0] *= -1
            pad = MEAN_RGB if key == "image" else augment.PAD_VALUES[key]
            if axis == 1:
                expected = np.stack([_naive_crop(a, top, left, CROP, pad) for a in source])
            else:
                expected = _naive_crop(source, top, left, CROP, pad)
            np.testing.assert_array_equal(out[key], expected, err_msg=f"{key} seed {seed}")
    assert flips == {True, False}
    np.testing.assert_array_equal(arrays["normals"], make_sample(2).normals)  # input untouched


def test_wire_depth_round_trip_within_the_stated_bound() -> None:
    """float16(depth / 16) back to metres: relative error <= 2**-11 from 1 mm to 16 * 65504 m,
    0 stays 0 (hand-picked depths: NYUv2's range, Stanford's 128 m, Cityscapes' ~120 km)."""
    rng = np.random.default_rng(0)
    depth = np.concatenate([
        np.array([0.0, 2.0 ** -10, 0.0123, 0.5, 1.0, 9.99, 128.0, 121_000.0, 16 * 65504.0]),
        np.exp(rng.uniform(np.log(2.0 ** -10), np.log(16 * 65504.0), 4000)),
    ]).astype(np.float32).reshape(1, 1, -1)
    shipped = wire.depth_to_wire(depth[0])
    assert shipped.dtype == np.float16 and shipped.nbytes == depth.nbytes // 2
    back = ray_pipeline.to_torch_batch({"depth": shipped[None]})["depth"].numpy()
    assert back.dtype == np.float32 and back[0, 0, 0] == 0.0
    relative = np.abs(back[..., 1:] - depth[..., 1:]) / depth[..., 1:]
    assert relative.max() <= 2.0 ** -11
    assert relative.max() > 2.0 ** -13  # it is float16, not a float32 copy
    for bad, shown in ((16 * 65504.0 + 1, "1048065.0"), (np.inf, "inf"), (np.nan, "nan")):
        with pytest.raises(ValueError, match=f"scene_7.png: depth {shown} m cannot travel as float16"):
            wire.depth_to_wire(np.array([[1.0, bad]], np.float32), "scene_7.png")


def test_wire_normals_round_trip_within_the_stated_bound() -> None:
    """int16 round(n * 32767) back to float32: every component within 0.5 / 32767 (+ float32
    rounding), angles within 0.002 degrees, 0 stays 0, -1 and 1 exact."""
    rng = np.random.default_rng(1)
    normals = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[0, 0, 0] = (0.0, 0.0, 0.0)
    normals[0, 0, 1] = (1.0, -1.0, 0.0)
    shipped = np.stack([wire.normals_to_wire(n) for n in normals])
    assert shipped.dtype == np.int16
    back = ray_pipeline.to_torch_batch({"normals": shipped})["normals"].numpy()  # (B, 3, H, W)
    reference = normals.transpose(0, 3, 1, 2)
    assert back.shape == (2, 3, 5, 7) and back.dtype == np.float32
    assert np.abs(back - reference).max() <= 0.5 / 32767 + 1e-7
    assert back[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0] and back[0, :, 0, 1].tolist() == [1.0, -1.0, 0.0]
    unit = np.ones((2, 5, 7), bool)
    unit[0, 0, :2] = False
    got, ref = (x.transpose(0, 2, 3, 1)[unit].astype(np.float64) for x in (back, reference))
    angle = np.arctan2(np.linalg.norm(np.cross(got, ref), axis=-1), (got * ref).sum(axis=-1))
    assert np.degrees(angle).max() < 0.002


def test_compact_loader_matches_the_float32_decode(tmp_path) -> None:
    """The sample a training worker gets (wire dtypes, then the collate) against the old float32
    path (shards.decode_row, float32 collate), on real NYUv2-format scenes."""
    from pag_model.tasks import target_fields
    from pipelines.datasets.write_formats import write_dataset

    raw = write_dataset("nyuv2", tmp_path / "raw", {"train": 2}, (48, 64))
    convert.convert("nyuv2", str(raw), str(tmp_path / "shards"), splits=["train"])
    out = str(tmp_path / "shards")
    files = shards.split_files(out, "train", shards.read_manifest(out))
    fields = target_fields(("semantic", "depth", "normals"))
    reader = shard_rows.RowReader(files, ray_pipeline._columns(fields))
    loader = shard_rows.SampleLoader(reader, fields, crop=None)
    for address in shard_rows.row_addresses(files):
        sample = loader.load(*address)
        assert sample["depth"].dtype == np.float16 and sample["normals"].dtype == np.int16
        assert sample["image"].dtype == np.uint8 and sample["semantic"].dtype == np.uint8
        assert sample["depth_valid"].dtype == np.bool_ and sample["normals_valid"].dtype == np.bool_
        got = ray_pipeline.to_torch_batch({k: np.asarray(v)[None] for k, v in sample.items()})
        reference = shards.decode_row(reader.read(*address), fields)
        assert reference["depth"].dtype == np.float32 and reference["normals"].dtype == np.float32
        depth = got["depth"][0].numpy()
        valid = reference["depth"] > 0
        assert valid.any() and (depth[~valid] == 0).all()
        relative = np.abs(depth[valid] - reference["depth"][valid]) / reference["depth"][valid]
        assert relative.max() <= 2.0 ** -11
        normals = got["normals"][0].numpy().transpose(1, 2, 0)
        assert np.abs(normals - reference["normals"]).max() <= 0.5 / 32767 + 1e-7
        for key in ("semantic", "depth_valid", "normals_valid"):
            np.testing.assert_array_equal(got[key][0].numpy(), reference[key], err_msg=key)
        image = got["image"][0].numpy().transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
        np.testing.assert_allclose(image * 255, reference["image"], atol=1e-3)


def test_compact_blocks_are_under_two_thirds_of_float32() -> None:
    """A 4-sample block of 224x304 crops of (semantic, depth, normals): 3.8 MB, was 6.0 MB."""
    h, w = 224, 304
    sample = {"image": np.zeros((h, w, 3), np.uint8), "semantic": np.zeros((h, w), np.uint8),
              "depth": np.ones((h, w), np.float32), "depth_valid": np.ones((h, w), bool),
              "normals": np.zeros((h, w, 3), np.float32), "normals_valid": np.ones((h, w), bool)}
    float32_bytes = 4 * sum(v.nbytes for v in sample.values())
    compact_bytes = 4 * sum(v.nbytes for v in wire.to_wire(sample).values())
    # bytes per pixel: image 3, semantic 1, masks 1 + 1; depth 4 -> 2, normals 12 -> 6
    assert float32_bytes == 4 * h * w * 22 and compact_bytes == 4 * h * w * 14


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
    """Recompute crop window and flip from the codes; return whether the row was flipped.

    The image's red and green channels give each pixel's source row and column (padding has
    the mean colour, which no code reaches); depth comes in float16 / 16 (`wire.py`), so it is
    held to the stated bound against the source's row * 1000 + column + 0.5."""
    index = int(str(row["sample_id"]).split("-")[1])
    image = row["image"].astype(int)
    assert image.shape == (*CROP, 3)
    inside = ~(image == MEAN_RGB).all(axis=-1)
    src_row, src_col = image[..., 0], image[..., 1]
    assert (image[inside][:, 2] == 10 * index).all()
    assert row["depth"].dtype == np.float16 and row["normals"].dtype == np.int16
    depth = row["depth"].astype(np.float64) * 16
    expected_depth = src_row * 1000 + src_col + 0.5
    assert (np.abs(depth - expected_depth)[inside] <= 2.0 ** -11 * expected_depth[inside]).all()
    assert (depth[~inside] == 0).all()
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
    normal_x = row["normals"][..., 0][row["normals_valid"]] / 32767
    assert np.allclose(normal_x, -NORMAL[0] if flipped else NORMAL[0], atol=0.5 / 32767)
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
