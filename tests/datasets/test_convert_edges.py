"""The converter's edges (issue 11, item 6): a changed source, corrupt and wrong files,
missing dataset-level files under `--on-error skip`, bad roots and outputs, killed writes.

Every dataset tree is written in its published format (`write_dataset`), then broken by
hand the way a real download or a real edit breaks it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.io
from PIL import Image

from pipelines.datasets import convert, shards
from pipelines.datasets.errors import DatasetError
from pipelines.datasets.write_formats import write_dataset
from tests.support.toy_dataset import ListReader, make_sample

ROOT = Path(__file__).resolve().parents[2]
NYU_MAT = "nyu_depth_v2_labeled.mat"


def _ids_on_disk(out: Path, split: str) -> list[str]:
    """Sample ids in every shard file of `split`, read with pyarrow (not the converter)."""
    ids = []
    for path in sorted((out / split).glob("*.parquet")):
        ids += pq.read_table(path, columns=["sample_id"]).column("sample_id").to_pylist()
    return ids


def _ids_in_manifest(out: Path, split: str) -> list[str]:
    manifest = shards.read_manifest(str(out))
    ids = []
    for shard in manifest["splits"][split]["shards"]:
        ids += pq.read_table(out / shard["file"], columns=["sample_id"]).column("sample_id").to_pylist()
    return ids


def _splits_mat(raw: Path) -> dict[str, list[int]]:
    mat = scipy.io.loadmat(raw / "splits.mat")
    return {"train": mat["trainNdxs"].ravel().astype(int).tolist(), "test": mat["testNdxs"].ravel().astype(int).tolist()}


def _write_splits_mat(raw: Path, splits: dict[str, list[int]]) -> None:
    scipy.io.savemat(raw / "splits.mat", {"trainNdxs": np.array(splits["train"], float).reshape(-1, 1),
                                          "testNdxs": np.array(splits["test"], float).reshape(-1, 1)})


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    status = convert.main(argv)
    return status, capsys.readouterr().err


# --- a changed source -------------------------------------------------------------------------


def test_frame_moved_from_train_to_test_leaves_train(tmp_path) -> None:
    raw = write_dataset("nyuv2", tmp_path / "raw", {"train": 3, "test": 2}, size=(48, 64))
    out = tmp_path / "shards"
    convert.convert("nyuv2", str(raw), str(out))  # one shard per split
    splits = _splits_mat(raw)
    moved = splits["train"][1]
    _write_splits_mat(raw, {"train": [i for i in splits["train"] if i != moved], "test": splits["test"] + [moved]})
    expected = {"train": sorted(f"{i:04d}" for i in splits["train"] if i != moved),
                "test": sorted(f"{i:04d}" for i in splits["test"] + [moved])}

    report = convert.convert("nyuv2", str(raw), str(out))
    assert (report.samples_written, report.shards_removed) == (3, 1)  # train's 2 kept frames rewritten
    for split in ("train", "test"):
        assert sorted(_ids_in_manifest(out, split)) == expected[split], split
        assert sorted(_ids_on_disk(out, split)) == expected[split], split  # no orphan shard either
        assert shards.read_manifest(str(out))["splits"][split]["count"] == len(expected[split])


def test_stale_samples_of_a_split_not_converted_are_named(tmp_path, capsys) -> None:
    raw = write_dataset("nyuv2", tmp_path / "raw", {"train": 3, "test": 2}, size=(48, 64))
    out = tmp_path / "shards"
    convert.convert("nyuv2", str(raw), str(out))
    splits = _splits_mat(raw)
    moved = splits["train"][0]
    _write_splits_mat(raw, {"train": splits["train"][1:], "test": splits["test"] + [moved]})
    status, err = _cli(["--dataset", "nyuv2", "--root", str(raw), "--out", str(out), "--splits", "test"], capsys)
    assert status == 2
    assert f"'{moved:04d}'" in err and "train" in err and "Traceback" not in err
    assert sorted(_ids_in_manifest(out, "train")) == sorted(f"{i:04d}" for i in splits["train"])  # untouched


def test_stale_samples_of_toy_reader_are_dropped_and_the_rest_kept(tmp_path) -> None:
    out = tmp_path / "shards"
    samples = [make_sample(i) for i in range(4)]
    convert.convert_reader(ListReader({"train": samples}), str(out), shard_mb=0.001)
    kept = [samples[0], samples[2], samples[3]]
    reader = ListReader({"train": kept})
    report = convert.convert_reader(reader, str(out), shard_mb=0.001)
    assert sorted(_ids_on_disk(out, "train")) == ["train-00", "train-02", "train-03"]
    assert report.manifest["splits"]["train"]["count"] == 3
    assert reader.reads == 0  # the other samples' shards are kept as they are


# --- a corrupt compressed chunk in the v7.3 file ----------------------------------------------


def _corrupt_frame(raw: Path, index: int) -> None:
    """Overwrite the middle of the deflate stream of 1-based frame `index` of `images`."""
    path = raw / NYU_MAT
    with h5py.File(path, "r") as f:
        images = f["images"]
        assert images.compression == "gzip"  # MATLAB's -v7.3 compresses every variable
        info = images.id.get_chunk_info_by_coord((index - 1, 0, 0, 0))
    data = bytearray(path.read_bytes())
    start = info.byte_offset + info.size // 3
    data[start:start + 32] = b"\xff" * 32
    path.write_bytes(bytes(data))


def test_corrupt_chunk_is_named_with_file_and_frame_or_skipped(tmp_path, capsys) -> None:
    raw = write_dataset("nyuv2", tmp_path / "raw", {"train": 3, "test": 2}, size=(48, 64))
    bad = _splits_mat(raw)["train"][1]
    _corrupt_frame(raw, bad)
    status, err = _cli(["--dataset", "nyuv2", "--root", str(raw), "--out", str(tmp_path / "a")], capsys)
    assert status == 2 and "Traceback" not in err
    assert f"{raw / NYU_MAT}" in err and f"frame {bad:04d}" in err

    with pytest.raises(DatasetError) as info:
        convert.convert("nyuv2", str(raw), str(tmp_path / "b"))
    assert info.value.path == str(raw / NYU_MAT) and f"frame {bad:04d}" in info.value.problem

    report = convert.convert("nyuv2", str(raw), str(tmp_path / "c"), on_error="skip")
    entry = report.manifest["splits"]["train"]
    assert entry["count"] == 2 and report.skipped == 1
    assert entry["skipped"][0]["sample_id"] == f"{bad:04d}"
    assert f"{bad:04d}" not in _ids_on_disk(tmp_path / "c", "train")


def test_out_of_range_label_names_the_frame(tmp_path) -> None:
    raw = write_dataset("nyuv2", tmp_path / "raw", {"train": 2, "test": 1}, size=(48, 64))
    frame = _splits_mat(raw)["test"][0]
    with h5py.File(raw / NYU_MAT, "r+") as f:
        labels = f["labels"][frame - 1]
        labels[5, 7] = 900  # raw NYUv2 ids are 1..894
        f["labels"][frame - 1] = labels
    with pytest.raises(DatasetError) as info:
        convert.convert("nyuv2", str(raw), str(tmp_path / "out"))
    assert info.value.path == str(raw / NYU_MAT)
    assert f"frame {frame:04d}" in info.value.problem and "label 900" in info.value.problem


# --- dataset-level files and roots ------------------------------------------------------------


@pytest.mark.parametrize("missing", ["classMapping40.mat", NYU_MAT])
def test_missing_dataset_level_file_fails_even_with_skip(tmp_path, capsys, missing: str) -> None:
    raw = write_dataset("nyuv2", tmp_path / "raw", {"train": 2, "test": 1}, size=(48, 64))
    (raw / missing).unlink()
    out = tmp_path / "out"
    status, err = _cli(["--dataset", "nyuv2", "--root", str(raw), "--out", str(out), "--on-error", "skip"], capsys)
    assert status == 2
    assert f"{raw / missing}: file not found" in err
    assert not (out / "manifest.json").exists()


def test_missing_stanford_labels_fail_even_with_skip(tmp_path, capsys) -> None:
    raw = write_dataset("stanford2d3d", tmp_path / "raw", {"train": 1, "val": 1}, size=(64, 128))
    (raw / "assets" / "semantic_labels.json").unlink()
    status, err = _cli(["--dataset", "stanford2d3d", "--root", str(raw), "--out", str(tmp_path / "out"),
                        "--on-error", "skip"], capsys)
    assert status == 2 and "semantic_labels.json: file not found" in err


def test_skip_fails_when_every_sample_of_a_split_is_bad(tmp_path) -> None:
    bad = {f"train-{i:02d}": DatasetError(f"/toy/shared-{i}.bin", "cannot decode") for i in range(3)}
    reader = ListReader({"train": [], "val": [make_sample(0, split="val")]}, bad)
    with pytest.raises(DatasetError, match=r"all 3 sample\(s\) of split 'train' were skipped") as info:
        convert.convert_reader(reader, str(tmp_path), on_error="skip")
    assert "/toy/shared-0.bin: cannot decode" in str(info.value)


@pytest.mark.parametrize("kind", ["missing", "empty", "wrong"])
def test_stanford_bad_root_fails(tmp_path, capsys, kind: str) -> None:
    raw = write_dataset("stanford2d3d", tmp_path / "raw", {"train": 1, "val": 1}, size=(64, 128))
    root = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "wrong": raw / "area_1"}[kind]
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    status, err = _cli(["--dataset", "stanford2d3d", "--root", str(root), "--out", str(out)], capsys)
    assert status == 2 and str(root) in err and "area_" in err and "Traceback" not in err
    assert not (out / "manifest.json").exists()


def test_stanford_split_without_its_areas_fails(tmp_path) -> None:
    raw = write_dataset("stanford2d3d", tmp_path / "raw", {"train": 1}, size=(64, 128))
    with pytest.raises(DatasetError, match=r"split 'val'.*area_3.*area_4") as info:
        convert.convert("stanford2d3d", str(raw), str(tmp_path / "out"))
    assert info.value.path == str(raw)
    assert not (tmp_path / "out" / "train").exists()  # refused before any work
    report = convert.convert("stanford2d3d", str(raw), str(tmp_path / "out"), splits=["train"])
    assert report.manifest["splits"]["train"]["count"] == 1


def test_bsds_without_val_fails_unless_the_splits_are_chosen(tmp_path, capsys) -> None:
    raw = write_dataset("bsds500", tmp_path / "raw", {"train": 1, "val": 1, "test": 1}, size=(40, 56))
    data = raw / "BSR" / "BSDS500" / "data"
    for folder in (data / "images" / "val", data / "groundTruth" / "val"):
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    out = tmp_path / "out"
    status, err = _cli(["--dataset", "bsds500", "--root", str(raw), "--out", str(out)], capsys)
    assert status == 2 and str(data / "images" / "val") in err and "train+val" in err
    assert not out.exists() or not any(out.rglob("*.parquet"))
    status, _ = _cli(["--dataset", "bsds500", "--root", str(raw), "--out", str(out), "--splits", "train", "test"], capsys)
    assert status == 0


def test_split_converted_before_but_gone_from_the_source_is_named(tmp_path, capsys) -> None:
    raw = write_dataset("bsds500", tmp_path / "raw", {"train": 1, "val": 1, "test": 1}, size=(40, 56))
    out = tmp_path / "out"
    assert convert.main(["--dataset", "bsds500", "--root", str(raw), "--out", str(out)]) == 0
    data = raw / "BSR" / "BSDS500" / "data"
    (data / "images" / "val").rename(tmp_path / "val-moved-away")
    status, err = _cli(["--dataset", "bsds500", "--root", str(raw), "--out", str(out), "--splits", "train", "test"], capsys)
    assert status == 2 and "split 'val' was converted before" in err and str(data / "images" / "val") in err


# --- 16-bit PNGs ------------------------------------------------------------------------------


def _as_8bit(path: Path) -> None:
    values = np.asarray(Image.open(path)).astype(np.int64)
    Image.fromarray(np.clip(values, 0, 255).astype(np.uint8)).save(path)
    assert Image.open(path).mode == "L"


def test_8bit_stanford_depth_is_refused(tmp_path) -> None:
    raw = write_dataset("stanford2d3d", tmp_path / "raw", {"train": 1, "val": 1}, size=(64, 128))
    png = next((raw / "area_1" / "pano" / "depth").glob("*_depth.png"))
    _as_8bit(png)
    with pytest.raises(DatasetError) as info:
        convert.convert("stanford2d3d", str(raw), str(tmp_path / "out"))
    assert info.value.path == str(png)
    assert "16-bit" in info.value.problem and "mode L" in info.value.problem


def test_8bit_cityscapes_disparity_is_refused(tmp_path) -> None:
    raw = write_dataset("cityscapes", tmp_path / "raw", {"train": 2})
    png = raw / "disparity" / "train" / "aachen" / "aachen_000001_000019_disparity.png"
    _as_8bit(png)
    with pytest.raises(DatasetError) as info:
        convert.convert("cityscapes", str(raw), str(tmp_path / "out"))
    assert info.value.path == str(png) and "16-bit" in info.value.problem


# --- the output -------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_out_at_a_file_is_a_clear_error(tmp_path, capsys, where: str) -> None:
    raw = write_dataset("cityscapes", tmp_path / "raw", {"train": 1})
    blocker = tmp_path / "taken.txt"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "shards"
    status, err = _cli(["--dataset", "cityscapes", "--root", str(raw), "--out", str(out)], capsys)
    assert status == 2 and "Traceback" not in err
    assert f"{blocker}" in err and "not a directory" in err
    assert blocker.read_text() == "x"


KILLER = """
import os, signal, sys
import pyarrow.parquet as pq
from pipelines.datasets import convert

original = pq.write_table
def write_then_die(*args, **kwargs):
    original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the shard is written but not yet published
pq.write_table = write_then_die
convert.main(sys.argv[1:])
"""


def test_killed_shard_write_leaves_no_temp_file_after_a_rerun(tmp_path) -> None:
    raw = write_dataset("cityscapes", tmp_path / "raw", {"train": 2})
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    tmpdir.mkdir()
    argv = ["--dataset", "cityscapes", "--root", str(raw), "--out", str(out), "--splits", "train"]
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", KILLER, *argv], cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert result.returncode == -9, result.stderr.decode()
    left = [p for p in list(out.rglob("*")) + list(tmpdir.rglob("*")) if p.is_file()]
    assert left, "the killed run should have left a partial file somewhere"
    assert not any(p.name.endswith(".parquet") and not p.name.startswith(".") for p in out.rglob("*"))

    report = convert.convert("cityscapes", str(raw), str(out), splits=["train"])
    assert report.manifest["splits"]["train"]["count"] == 2
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["manifest.json", "train/part-00000.parquet"]
    assert [p for p in tmpdir.rglob("*") if p.is_file()] == []
