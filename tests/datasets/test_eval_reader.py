"""The evaluation reader: full-size rows in shard order, with evaluation-only fields, no Ray."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.datasets import convert, shards
from pipelines.datasets.eval_reader import eval_batches
from pipelines.datasets.schema import IMAGENET_MEAN, IMAGENET_STD
from tests.support.s3 import s3_server  # noqa: F401
from tests.support.toy_dataset import ListReader, make_sample


@pytest.fixture(scope="module")
def toy_shards(tmp_path_factory) -> str:
    """12 train and 3 val toy samples, 3 rows per shard (so the reader crosses shards)."""
    out = str(tmp_path_factory.mktemp("shards"))
    reader = ListReader({"train": [make_sample(i) for i in range(12)],
                         "val": [make_sample(i, split="val") for i in range(3)]})
    one_row = sum(len(v) for v in shards.encode_sample(make_sample(0)).values() if isinstance(v, bytes))
    convert.convert_reader(reader, out, shard_mb=2.5 * one_row / 2**20)
    return out


def _image(batch) -> np.ndarray:
    """(1, 3, H, W) normalised -> (H, W, 3) uint8, undoing the normalisation by hand."""
    x = batch["image"][0].permute(1, 2, 0).numpy()
    return np.rint((x * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)) * 255).astype(np.uint8)


def test_rows_are_full_size_in_order_with_evaluation_fields(toy_shards) -> None:
    batches = list(eval_batches(toy_shards, "val", ["semantic", "boundary"]))
    assert len(batches) == 3
    for i, batch in enumerate(batches):
        expected = make_sample(i, split="val")
        assert set(batch) == {"image", "semantic", "boundary", "boundary_annotators", "instances"}
        np.testing.assert_array_equal(_image(batch), expected.image)
        for key in ("semantic", "boundary", "boundary_annotators", "instances"):
            np.testing.assert_array_equal(batch[key][0].numpy(), getattr(expected, key), err_msg=key)
    assert len(list(eval_batches(toy_shards, "val", ["semantic"], max_images=2))) == 2


def test_reader_fails_naming_the_manifest(tmp_path) -> None:
    sample = make_sample(1)
    sample.depth = sample.depth_valid = None
    convert.convert_reader(ListReader({"train": [sample], "val": []}), str(tmp_path))
    with pytest.raises(shards.ShardError, match="split 'val' has no samples"):
        next(eval_batches(str(tmp_path), "val", ["semantic"]))
    with pytest.raises(shards.ShardError, match=r"split 'train' of 'toy' lacks \['depth', 'depth_valid'\]"):
        next(eval_batches(str(tmp_path), "train", ["depth"]))


@pytest.mark.slow
def test_reader_reads_shards_from_s3(s3_server) -> None:  # noqa: F811
    bucket = s3_server.make_bucket()
    out = f"s3://{bucket}/toy"
    convert.convert_reader(ListReader({"val": [make_sample(i, split="val") for i in range(2)]}), out)
    batches = list(eval_batches(out, "val", ["depth"]))
    assert len(batches) == 2
    np.testing.assert_array_equal(batches[1]["depth"][0].numpy(), make_sample(1, split="val").depth)
