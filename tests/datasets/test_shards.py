"""Samples <-> Parquet rows and shard files, the manifest reader, the storage helpers (local)."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.datasets import shard_rows, shards, storage
from pipelines.datasets.schema import SCHEMA_VERSION, TARGET_FIELDS
from tests.support.toy_dataset import make_sample


def test_png_rows_decode_to_the_exact_sample() -> None:
    original = make_sample(3)
    back = shards.row_to_sample(shards.encode_sample(original))
    assert (back.sample_id, back.dataset, back.split, back.source) == (
        "train-03",
        "toy",
        "train",
        "/toy/train/03.png",
    )
    np.testing.assert_array_equal(back.image, original.image)
    for field in TARGET_FIELDS:
        value, expected = getattr(back, field), getattr(original, field)
        assert value.dtype == expected.dtype, field
        np.testing.assert_array_equal(value, expected, err_msg=field)


def test_decoded_values_match_hand_computed_codes() -> None:
    row = shards.encode_sample(make_sample(2))
    out = shards.decode_row(row, ["depth", "normals", "boundary_annotators", "depth_valid"])
    assert out["image"][5, 7].tolist() == [5, 7, 20]
    assert out["depth"][5, 7] == np.float32(5007.5)
    assert out["normals"][5, 7].tolist() == pytest.approx([0.6, 0.0, 0.8])
    assert out["boundary_annotators"].shape == (3, 40, 56)
    assert out["boundary_annotators"][2, 5, 7] == (5 + 2) % 2
    assert not out["depth_valid"][0, 7] and out["depth_valid"][1, 7]


def test_raw_arrays_are_little_endian_with_shape_and_dtype_columns() -> None:
    row = shards.encode_sample(make_sample(1))
    assert row["depth_shape"] == [40, 56]
    assert row["depth_dtype"] == "<f4"
    first = np.frombuffer(row["depth"][:4], dtype="<f4")[0]
    assert first == np.float32(0.5)  # pixel (0, 0): 0 * 1000 + 0 + 0.5


def test_jpeg_images_are_close_and_targets_exact() -> None:
    original = make_sample(4)
    row = shards.encode_sample(original, image_format="jpeg")
    assert row["image"][:2] == b"\xff\xd8"  # JPEG magic
    back = shards.row_to_sample(row)
    error = np.abs(back.image.astype(int) - original.image.astype(int)).mean()
    assert error < 4.0
    np.testing.assert_array_equal(back.semantic, original.semantic)


def test_wrong_dtype_names_the_source_file() -> None:
    sample = make_sample(0)
    sample.semantic = sample.semantic.astype(np.int64)
    with pytest.raises(ValueError, match=r"/toy/train/00\.png: semantic has dtype int64, expected uint8"):
        shards.encode_sample(sample)


def test_unknown_image_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="image_format 'webp'"):
        shards.encode_sample(make_sample(0), image_format="webp")


def test_missing_requested_field_names_the_sample(tmp_path) -> None:
    sample = make_sample(0)
    sample.depth = None
    row = shards.encode_sample(sample)
    with pytest.raises(shards.ShardError, match=r"/toy/train/00\.png: sample train-00 has no 'depth'"):
        shards.decode_row(row, ["depth"])


def test_written_shard_is_plain_parquet_and_lists_back(tmp_path) -> None:
    samples = [make_sample(i) for i in range(3)]
    samples[2].instances = None
    rows = [shards.encode_sample(s) for s in samples]
    uri = storage.join(str(tmp_path), "train", shards.shard_name(0))
    info = shards.write_shard(rows, uri)
    assert info["count"] == 3
    assert "instances" not in info["fields"] and "depth" in info["fields"]
    # Independent reader: pyarrow on the file itself.
    table = pq.read_table(uri)
    assert table.num_rows == 3
    assert table.column("sample_id").to_pylist() == ["train-00", "train-01", "train-02"]
    assert table.column("instances").null_count == 1
    assert info["bytes"] == os.path.getsize(uri)
    assert sorted(os.listdir(tmp_path / "train")) == ["part-00000.parquet"]  # no temp files left
    listed = shards.existing_shards(str(tmp_path), "train")
    assert [(s["file"], s["index"], s["count"]) for s in listed] == [("train/part-00000.parquet", 0, 3)]
    assert listed[0]["sample_ids"] == ["train-00", "train-01", "train-02"]


def test_existing_shards_ignores_temporary_and_foreign_files(tmp_path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / ".part-00000.parquet.tmp-1-abc").write_bytes(b"half")
    (tmp_path / "train" / "notes.txt").write_text("x")
    assert shards.existing_shards(str(tmp_path), "train") == []
    assert shards.existing_shards(str(tmp_path), "val") == []  # no directory at all


def test_corrupt_shard_is_reported_with_its_path(tmp_path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part-00000.parquet").write_bytes(b"not parquet")
    with pytest.raises(shards.ShardError, match=r"part-00000\.parquet: not a readable Parquet shard"):
        shards.existing_shards(str(tmp_path), "train")


def _manifest(**overrides) -> dict:
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "dataset": "toy",
        "class_names": ["a"],
        "splits": {"train": {"count": 0, "fields": [], "shards": [], "skipped": []}},
    }
    manifest.update(overrides)
    return manifest


def test_read_manifest_errors_name_the_path(tmp_path) -> None:
    path = tmp_path / "manifest.json"
    with pytest.raises(shards.ShardError, match=f"{path}: no manifest"):
        shards.read_manifest(str(tmp_path))
    path.write_text("{not json")
    with pytest.raises(shards.ShardError, match=f"{path}: manifest is not valid JSON"):
        shards.read_manifest(str(tmp_path))
    path.write_text(json.dumps(_manifest(schema_version=SCHEMA_VERSION + 1)))
    with pytest.raises(shards.ShardError, match=f"{path}: schema version {SCHEMA_VERSION + 1}"):
        shards.read_manifest(str(tmp_path))
    bad = _manifest()
    del bad["class_names"]
    path.write_text(json.dumps(bad))
    with pytest.raises(shards.ShardError, match=r"lacks key\(s\) \['class_names'\]"):
        shards.read_manifest(str(tmp_path))


def test_split_files_rejects_unknown_and_empty_splits(tmp_path) -> None:
    manifest = _manifest()
    with pytest.raises(shards.ShardError, match=r"no split 'val'; manifest has \['train'\]"):
        shards.split_files(str(tmp_path), "val", manifest)
    with pytest.raises(shards.ShardError, match="split 'train' has no samples"):
        shards.split_files(str(tmp_path), "train", manifest)


def test_storage_local_writes_are_atomic_and_listed(tmp_path) -> None:
    uri = str(tmp_path / "a" / "b.json")
    storage.write_bytes(uri, b"{}")
    assert open(uri, "rb").read() == b"{}"
    assert os.listdir(tmp_path / "a") == ["b.json"]
    assert storage.list_files(str(tmp_path / "a"), ".json") == [uri]
    assert storage.exists(uri) and not storage.exists(uri + "x")
    with pytest.raises(FileNotFoundError, match="nope.json: no such file"):
        storage.read_bytes(str(tmp_path / "nope.json"))


def test_storage_options_from_standard_aws_variables(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    opts = storage.StorageOptions.from_env()
    assert (opts.endpoint_url, opts.access_key_id, opts.secret_access_key, opts.region) == (
        "http://127.0.0.1:9",
        "k",
        "s",
        "eu-west-1",
    )
    assert storage.join("s3://bucket/pre/", "train", "x.parquet") == "s3://bucket/pre/train/x.parquet"
    with pytest.raises(ValueError, match="must look like http"):
        storage.s3_filesystem(storage.StorageOptions(endpoint_url="127.0.0.1:9"))


def test_rows_are_one_per_row_group_and_readable_by_address(tmp_path) -> None:
    uris = []
    for f in range(2):
        rows = [shards.encode_sample(make_sample(3 * f + i)) for i in range(3)]
        uris.append(storage.join(str(tmp_path), "train", shards.shard_name(f)))
        shards.write_shard(rows, uris[-1])
    addresses = shard_rows.row_addresses(uris)
    assert addresses == [(f, g, 0) for f in range(2) for g in range(3)]
    reader = shard_rows.RowReader(uris, ["sample_id", "image", "depth", "depth_shape", "depth_dtype"])
    row = reader.read(1, 2, 0)
    assert row["sample_id"] == "train-05" and set(row) == set(reader.columns)
    loader = shard_rows.SampleLoader(reader, ["depth"], crop=None, compact=False)
    sample = loader.load(0, 1, 0)
    np.testing.assert_array_equal(sample["depth"], make_sample(1).depth)
    batch = {"file": np.array([1, 0, 0]), "group": np.array([0, 2, 0]), "offset": np.zeros(3, int)}
    groups = list(shard_rows.SampleLoader(reader, ["depth"], crop=(32, 48), rows_per_block=2)(batch))
    assert [list(g["sample_id"]) for g in groups] == [["train-03", "train-02"], ["train-00"]]
    assert groups[0]["image"].shape == (2, 32, 48, 3) and groups[1]["depth"].shape == (1, 32, 48)


def test_storage_exclusive_refuses_a_second_writer_and_temp_files_are_removed(tmp_path) -> None:
    out = str(tmp_path / "out")
    with storage.exclusive(out):
        with pytest.raises(BlockingIOError, match=f"{out}: another process is writing here"):
            with storage.exclusive(out):
                pass
    with storage.exclusive(out):  # released when the block ends
        pass
    (tmp_path / "out" / ".part-00001.parquet.tmp-12-dead").write_bytes(b"half")
    (tmp_path / "out" / "part-00000.parquet").write_bytes(b"kept")
    (tmp_path / "out" / ".hidden-but-not-temporary").write_bytes(b"kept")
    assert storage.remove_temp_files(out) == [str(tmp_path / "out" / ".part-00001.parquet.tmp-12-dead")]
    assert sorted(os.listdir(out)) == [".hidden-but-not-temporary", "part-00000.parquet"]
    assert storage.remove_temp_files(str(tmp_path / "missing")) == []
