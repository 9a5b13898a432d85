"""Preflight (before Ray starts): every shard file of the used splits is whole, and
`tracking.front_metric` is a metric the evaluation produces for the model's tasks."""
from __future__ import annotations

import shutil

import pytest

from pipelines.config import ConfigError
from pipelines.train.curriculum import front_metrics, preflight
from tests.support.staged_data import make_shards, tiny_config

STAGES = "[{name: base, iterations: 2, lr: 0.01}]"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("data"), train=2, test=1, size=(32, 32))


@pytest.fixture
def shard_dir(pristine, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(pristine, copy)
    return copy


def test_whole_shards_pass(shard_dir, tmp_path):
    preflight(tiny_config(shard_dir, tmp_path, STAGES))


def test_missing_shard_is_named(shard_dir, tmp_path):
    shard = shard_dir / "train" / "part-00000.parquet"
    shard.unlink()
    with pytest.raises(ConfigError) as info:
        preflight(tiny_config(shard_dir, tmp_path, STAGES))
    assert f"{shard}: shard of split 'train'" in str(info.value) and "is missing" in str(info.value)
    assert "pipelines.datasets.convert" in str(info.value)


def test_truncated_shard_is_named(shard_dir, tmp_path):
    shard = shard_dir / "test" / "part-00000.parquet"
    size = shard.stat().st_size
    with open(shard, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(ConfigError) as info:
        preflight(tiny_config(shard_dir, tmp_path, STAGES))
    assert f"{shard}: {size // 2} bytes, the manifest recorded {size}" in str(info.value)


def test_shard_with_a_torn_footer_of_the_same_size_is_named(shard_dir, tmp_path):
    shard = shard_dir / "train" / "part-00000.parquet"
    data = bytearray(shard.read_bytes())
    data[-64:] = bytes(64)  # the footer and its "PAR1" magic overwritten, size unchanged
    shard.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="not a readable Parquet file") as info:
        preflight(tiny_config(shard_dir, tmp_path, STAGES))
    assert str(shard) in str(info.value)


def test_front_metric_typo_is_found_before_training(pristine, tmp_path):
    config = tiny_config(pristine, tmp_path, STAGES, extra=["tracking.front_metric=semantic/mIoU"])
    with pytest.raises(ConfigError) as info:
        preflight(config)
    message = str(info.value)
    assert message.startswith("tracking.front_metric='semantic/mIoU': not a metric of model.tasks=['semantic', 'depth']")
    assert "'semantic/miou'" in message and "'depth/delta1'" in message


def test_front_metrics_are_the_evaluations_names():
    # pag_model.evaluation.Evaluator's docstring: semantic/miou, pixel_acc, mean_acc, and with
    # Cityscapes instances iiou, category_iou, category_iiou; boundary/ods, ois, ap, ods_threshold.
    assert front_metrics(("semantic",), ["semantic"]) == ["semantic/miou", "semantic/pixel_acc", "semantic/mean_acc"]
    assert front_metrics(("semantic",), ["semantic", "instances"])[3:] == [
        "semantic/iiou", "semantic/category_iou", "semantic/category_iiou"
    ]
    assert front_metrics(("boundary",), ["boundary"]) == [
        "boundary/ods", "boundary/ois", "boundary/ap", "boundary/ods_threshold"
    ]
