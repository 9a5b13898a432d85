"""The converter: real dataset trees -> Parquet shards locally and on S3 (moto), reruns,
and every bad input of issue 4 named in the error or recorded in the manifest."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.io
from PIL import Image

from pipelines.datasets import convert, shards, storage
from pipelines.datasets.errors import DatasetError
from pipelines.datasets.readers import get_reader
from pipelines.datasets.schema import SCHEMA_VERSION, TARGET_FIELDS
from pipelines.datasets.write_formats import write_dataset
from tests.support.s3 import s3_server  # noqa: F401
from tests.support.toy_dataset import ListReader, make_sample

ROOT = Path(__file__).resolve().parents[2]


def _files(out: Path) -> dict[str, int]:
    """Every file under `out` with its mtime in ns."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*")) if p.is_file()}


def _rows(out: str, manifest: dict, split: str) -> list[dict]:
    rows = []
    for uri in shards.split_files(out, split, manifest):
        rows += pq.read_table(uri).to_pylist()
    return rows


def _assert_same_sample(row: dict, expected) -> None:
    got = shards.row_to_sample(row)
    assert got.sample_id == expected.sample_id and got.source == expected.source
    np.testing.assert_array_equal(got.image, expected.image)
    for field in TARGET_FIELDS:
        value, want = getattr(got, field), getattr(expected, field)
        assert (value is None) == (want is None), field
        if want is not None:
            np.testing.assert_array_equal(value, want, err_msg=field)


def test_nyuv2_tree_converts_to_shards_that_decode_to_the_readers_samples(tmp_path) -> None:
    raw = write_dataset("nyuv2", tmp_path / "raw")
    out = str(tmp_path / "shards")
    report = convert.convert("nyuv2", str(raw), out)
    manifest = shards.read_manifest(out)
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["dataset"] == "nyuv2"
    assert len(manifest["class_names"]) == 40
    assert manifest["class_names"][0] == "wall" and manifest["class_names"][-1] == "otherprop"
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 3, "test": 2}
    assert manifest["splits"]["train"]["fields"] == [
        "depth", "depth_valid", "normals", "normals_valid", "semantic"
    ]
    assert report.samples_written == 5 and report.skipped == 0 and report.manifest_written
    reader = get_reader("nyuv2", raw)
    for split in ("train", "test"):
        rows = _rows(out, manifest, split)
        assert [r["sample_id"] for r in rows] == reader.sample_ids(split)
        for row in rows:
            _assert_same_sample(row, reader.read(split, row["sample_id"]))


def test_shards_close_at_the_size_limit(tmp_path) -> None:
    samples = [make_sample(i) for i in range(6)]
    one_row = sum(len(v) for v in shards.encode_sample(samples[0]).values() if isinstance(v, bytes))
    limit_mb = 2.5 * one_row / 2**20  # a shard closes once it holds >= 2.5 rows' bytes: 3 rows
    report = convert.convert_reader(ListReader({"train": samples}), str(tmp_path), shard_mb=limit_mb)
    entry = report.manifest["splits"]["train"]
    assert [s["count"] for s in entry["shards"]] == [3, 3]
    assert [s["file"] for s in entry["shards"]] == ["train/part-00000.parquet", "train/part-00001.parquet"]
    assert entry["count"] == 6


def test_rerun_writes_nothing_and_reads_nothing(tmp_path) -> None:
    out = tmp_path / "shards"
    samples = {"train": [make_sample(i) for i in range(4)], "val": [make_sample(9, split="val")]}
    convert.convert_reader(ListReader(samples), str(out), shard_mb=0.01)
    before = _files(out)
    again = ListReader(samples)
    report = convert.convert_reader(again, str(out), shard_mb=0.01)
    assert (report.shards_written, report.samples_written, report.manifest_written) == (0, 0, False)
    assert again.reads == 0
    assert _files(out) == before


def test_rerun_after_a_lost_shard_writes_only_its_samples(tmp_path) -> None:
    out = tmp_path / "shards"
    samples = [make_sample(i) for i in range(4)]
    convert.convert_reader(ListReader({"train": samples}), str(out), shard_mb=0.01)  # 1 row per shard
    lost = out / "train" / "part-00001.parquet"
    lost_ids = pq.read_table(lost).column("sample_id").to_pylist()
    lost.unlink()
    before = _files(out)
    (out / "train" / ".part-00004.parquet.tmp-99-dead").write_bytes(b"partial upload")
    reader = ListReader({"train": samples})
    report = convert.convert_reader(reader, str(out), shard_mb=0.01)
    assert (report.shards_written, report.samples_written, reader.reads) == (1, 1, 1)
    after = _files(out)
    new = sorted(set(after) - set(before))
    assert new == ["train/part-00004.parquet"]  # and the dead run's temporary file is gone
    assert all(after[k] == v for k, v in before.items() if k != "manifest.json")
    assert pq.read_table(out / new[0]).column("sample_id").to_pylist() == lost_ids
    assert report.manifest["splits"]["train"]["count"] == 4


def _cityscapes(tmp_path: Path) -> tuple[Path, str, str]:
    raw = write_dataset("cityscapes", tmp_path / "raw", n_per_split={"train": 3})
    sample_id = "aachen_000001_000019"
    return raw, "train", sample_id


def _break_truncated_image(raw: Path, sid: str) -> tuple[Path, str]:
    path = raw / "leftImg8bit" / "train" / "aachen" / f"{sid}_leftImg8bit.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "cannot decode image"


def _break_missing_ground_truth(raw: Path, sid: str) -> tuple[Path, str]:
    path = raw / "gtFine" / "train" / "aachen" / f"{sid}_gtFine_labelIds.png"
    path.unlink()
    return path, "file not found"


def _break_label_out_of_range(raw: Path, sid: str) -> tuple[Path, str]:
    path = raw / "gtFine" / "train" / "aachen" / f"{sid}_gtFine_labelIds.png"
    labels = np.asarray(Image.open(path)).copy()
    labels[3, 4] = 200
    Image.fromarray(labels).save(path)
    return path, "out of range"


def _break_mismatched_sizes(raw: Path, sid: str) -> tuple[Path, str]:
    path = raw / "disparity" / "train" / "aachen" / f"{sid}_disparity.png"
    Image.fromarray(np.ones((32, 64), np.uint16)).save(path)
    return path, "expected (64, 128)"


BREAKERS = {
    "truncated image": _break_truncated_image,
    "missing ground truth": _break_missing_ground_truth,
    "label out of range": _break_label_out_of_range,
    "mismatched sizes": _break_mismatched_sizes,
}


@pytest.mark.parametrize("problem", sorted(BREAKERS))
def test_bad_cityscapes_file_is_named_or_skipped(tmp_path, problem: str) -> None:
    raw, split, sid = _cityscapes(tmp_path)
    path, words = BREAKERS[problem](raw, sid)
    with pytest.raises(DatasetError) as info:
        convert.convert("cityscapes", str(raw), str(tmp_path / "a"))
    assert info.value.path == str(path) and words in info.value.problem
    assert not (tmp_path / "a" / "manifest.json").exists()

    report = convert.convert("cityscapes", str(raw), str(tmp_path / "b"), on_error="skip")
    entry = shards.read_manifest(str(tmp_path / "b"))["splits"][split]
    assert entry["count"] == 2 and report.skipped == 1
    assert [(s["sample_id"], s["path"]) for s in entry["skipped"]] == [(sid, str(path))]
    assert words in entry["skipped"][0]["problem"]


def test_wrong_mat_keys_are_named_or_skipped(tmp_path) -> None:
    raw = write_dataset("bsds500", tmp_path / "raw", n_per_split={"train": 2})
    reader = get_reader("bsds500", raw)
    sid = reader.sample_ids("train")[0]
    path = raw / "BSR" / "BSDS500" / "data" / "groundTruth" / "train" / f"{sid}.mat"
    scipy.io.savemat(path, {"gt": np.zeros((2, 2))})
    with pytest.raises(DatasetError, match=rf"{path}: missing key\(s\) \['groundTruth'\]"):
        convert.convert("bsds500", str(raw), str(tmp_path / "a"), splits=["train"])
    convert.convert("bsds500", str(raw), str(tmp_path / "b"), splits=["train"], on_error="skip")
    entry = shards.read_manifest(str(tmp_path / "b"))["splits"]["train"]
    assert entry["count"] == 1
    assert entry["skipped"][0]["path"] == str(path)


def test_converter_checks_labels_and_sizes_itself(tmp_path) -> None:
    out_of_range = make_sample(0)
    out_of_range.semantic[2, 3] = 7  # 3 classes: 0..2 or 255
    wrong_size = make_sample(1)
    wrong_size.depth = wrong_size.depth[:, :50]
    good = make_sample(2)
    reader = ListReader({"train": [out_of_range, wrong_size, good]})
    with pytest.raises(DatasetError, match=r"/toy/train/00\.png: semantic label\(s\) \[7\] out of range"):
        convert.convert_reader(reader, str(tmp_path / "a"))
    report = convert.convert_reader(reader, str(tmp_path / "b"), on_error="skip")
    skipped = report.manifest["splits"]["train"]["skipped"]
    assert [s["path"] for s in skipped] == ["/toy/train/00.png", "/toy/train/01.png"]
    assert "depth has spatial size (40, 50), image is (40, 56)" in skipped[1]["problem"]
    assert report.manifest["splits"]["train"]["count"] == 1


def test_skipped_files_are_retried_and_the_manifest_kept_when_unchanged(tmp_path) -> None:
    bad = {"train-07": DatasetError("/toy/train/07.png", "cannot decode image (truncated)")}
    samples = {"train": [make_sample(0)]}
    out = tmp_path / "shards"
    convert.convert_reader(ListReader(samples, bad), str(out), on_error="skip")
    before = _files(out)
    reader = ListReader(samples, bad)
    report = convert.convert_reader(reader, str(out), on_error="skip")
    assert reader.reads == 1 and report.skipped == 1 and not report.manifest_written
    assert _files(out) == before
    fixed = ListReader({"train": [make_sample(0), make_sample(7)]})
    report = convert.convert_reader(fixed, str(out), on_error="skip")
    assert report.samples_written == 1 and report.manifest["splits"]["train"]["skipped"] == []


def test_output_of_another_dataset_and_unknown_splits_are_refused(tmp_path) -> None:
    convert.convert_reader(ListReader({"train": [make_sample(0)]}), str(tmp_path))
    with pytest.raises(shards.ShardError, match="holds dataset 'toy', not 'other'"):
        convert.convert_reader(ListReader({"train": [make_sample(0)]}, name="other"), str(tmp_path))
    with pytest.raises(ValueError, match=r"no split\(s\) \['val'\]; it has \['train'\]"):
        convert.convert_reader(ListReader({"train": [make_sample(0)]}), str(tmp_path), splits=["val"])


def test_cli_converts_chosen_splits_and_reports_errors(tmp_path, capsys) -> None:
    raw = write_dataset("cityscapes", tmp_path / "raw")
    out = tmp_path / "shards"
    argv = ["--dataset", "cityscapes", "--root", str(raw), "--out", str(out), "--splits", "train", "val"]
    assert convert.main(argv + ["--shard-mb", "0.01"]) == 0
    manifest = shards.read_manifest(str(out))
    assert sorted(manifest["splits"]) == ["train", "val"]
    assert [len(manifest["splits"][s]["shards"]) for s in ("train", "val")] == [3, 2]
    assert "{'train': 3, 'val': 2}" in capsys.readouterr().out
    (raw / "camera" / "val" / "frankfurt" / "frankfurt_000000_000019_camera.json").write_text("{")
    assert convert.main(argv[:4] + ["--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "frankfurt_000000_000019_camera.json: invalid JSON" in err


@pytest.mark.slow
def test_convert_to_s3_uses_multipart_uploads_and_reruns_idempotently(s3_server, tmp_path) -> None:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(5):  # incompressible 1024 x 1024 images: a ~16 MB shard, above the 10 MB part size
        sample = make_sample(i, size=(1024, 1024))
        sample.image = rng.integers(0, 256, sample.image.shape, dtype=np.uint8)
        sample.normals = sample.normals_valid = sample.boundary_annotators = sample.instances = None
        samples.append(sample)
    bucket = s3_server.make_bucket()
    out = f"s3://{bucket}/toy"
    report = convert.convert_reader(ListReader({"train": samples}), out, shard_mb=256)
    assert report.shards_written == 1
    client = s3_server.client()
    head = client.head_object(Bucket=bucket, Key="toy/train/part-00000.parquet")
    assert head["ContentLength"] > 15 * 2**20
    assert int(head["ETag"].strip('"').rsplit("-", 1)[1]) >= 2  # "<md5>-<parts>": multipart
    manifest = shards.read_manifest(out)
    assert manifest["splits"]["train"]["count"] == 5
    # Download with boto3 (independent of pyarrow's S3 client) and decode a row.
    local = tmp_path / "shard.parquet"
    client.download_file(bucket, "toy/train/part-00000.parquet", str(local))
    _assert_same_sample(pq.read_table(local).to_pylist()[3], samples[3])

    def objects() -> dict[str, tuple]:
        listing = client.list_objects_v2(Bucket=bucket)["Contents"]
        return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listing}

    before = objects()
    assert sorted(before) == ["toy/manifest.json", "toy/train/part-00000.parquet"]
    again = ListReader({"train": samples})
    report = convert.convert_reader(again, out, shard_mb=256)
    assert (report.shards_written, report.manifest_written, again.reads) == (0, False, 0)
    assert objects() == before


@pytest.mark.slow
def test_cli_writes_to_s3_with_credentials_from_the_environment(s3_server, tmp_path) -> None:
    raw = write_dataset("bsds500", tmp_path / "raw")
    bucket = s3_server.make_bucket()
    out = f"s3://{bucket}/bsds"
    cmd = [sys.executable, "-m", "pipelines.datasets.convert", "--dataset", "bsds500", "--root", str(raw),
           "--out", out]
    result = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = shards.read_manifest(out)
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 3, "val": 2, "test": 2}
    assert manifest["splits"]["test"]["fields"] == ["boundary", "boundary_annotators"]
    assert storage.list_files(f"{out}/train", ".parquet") == [f"{out}/train/part-00000.parquet"]


@pytest.mark.slow
def test_s3_rerun_drops_stale_samples_and_aborts_unfinished_uploads(s3_server) -> None:
    bucket = s3_server.make_bucket()
    out = f"s3://{bucket}/toy"
    samples = [make_sample(i) for i in range(3)]
    convert.convert_reader(ListReader({"train": samples}), out, shard_mb=0.001)  # one row per shard
    client = s3_server.client()
    dead = client.create_multipart_upload(Bucket=bucket, Key="toy/train/part-00007.parquet")["UploadId"]
    client.upload_part(Bucket=bucket, Key="toy/train/part-00007.parquet", UploadId=dead, PartNumber=1, Body=b"half")
    other = client.create_multipart_upload(Bucket=bucket, Key="elsewhere/x.bin")["UploadId"]

    report = convert.convert_reader(ListReader({"train": [samples[0], samples[2]]}), out, shard_mb=0.001)
    assert (report.shards_written, report.shards_removed) == (0, 1)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["toy/manifest.json", "toy/train/part-00000.parquet", "toy/train/part-00002.parquet"]
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("elsewhere/x.bin", other)]
    assert shards.read_manifest(out)["splits"]["train"]["count"] == 2
