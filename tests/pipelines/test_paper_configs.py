"""Integration: every paper config end to end on generated data in its dataset's real format.

Each config under configs/ is run as shipped, shrunk with `--set`-style overrides to two tiny
stages (the small `resnet_tiny` backbone, random init, a few iterations, a gated stage with the
config's own MultiPool place) on a few images written in the publisher's on-disk format at
realistic, odd sizes (BSDS 321x481 and 481x321; panoramas whose processed height is not a
multiple of 8), converted to shards, trained on a local Ray, evaluated at full size and
tracked in a real MLflow server. The test checks that every benchmark metric of the task
arrives in the gated stage's MLflow run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.mlflow_server import mlflow_server  # noqa: F401
from tests.support.staged_data import ROOT

pytestmark = pytest.mark.slow

SEMANTIC = ("semantic/miou", "semantic/pixel_acc")
DEPTH = ("depth/delta1", "depth/delta2", "depth/delta3", "depth/absrel", "depth/sqrel", "depth/rmse",
         "depth/rmse_log", "depth/log10")
NORMALS = ("normals/mean", "normals/median", "normals/rmse", "normals/within_11_25", "normals/within_22_5",
           "normals/within_30")
COMPUTATION = ("macs", "macs_ratio")


@dataclass(frozen=True)
class PaperRun:
    """One paper config shrunk for the test.

    Args:
        config: the file under configs/.
        dataset: the converter's dataset name.
        writes: (scenes per split, (H, W) as written, seed) for each `write_dataset` call.
        gated: the block the tiny gated stage gates (resnet_tiny has one gateable block in
            each of res4 and res5).
        crop: training crop, smaller than every processed image.
        metrics: the benchmark metrics that must reach MLflow (besides computation).
    """

    config: str
    dataset: str
    writes: tuple
    gated: str
    crop: tuple[int, int]
    metrics: tuple[str, ...]


# NYUv2 segmentation runs in the Table 2 test below: configs/nyuv2_seg_table2.yaml is
# configs/nyuv2_seg.yaml's model, data and training sections with the Table 2 stages.
NYUV2_SEG = PaperRun("nyuv2_seg.yaml", "nyuv2", (({"train": 2, "test": 2}, (121, 161), 0),), "res5", (48, 48), SEMANTIC)
RUNS = [
    PaperRun("bsds.yaml", "bsds500",
             (({"train": 2, "val": 1, "test": 1}, (321, 481), 0), ({"test": 1}, (481, 321), 1)),
             "res4", (64, 64), ("boundary/ods", "boundary/ois", "boundary/ap")),
    PaperRun("nyuv2_depth.yaml", "nyuv2", (({"train": 2, "test": 2}, (121, 161), 0),), "res5", (48, 48), DEPTH),
    PaperRun("nyuv2_normals.yaml", "nyuv2", (({"train": 2, "test": 2}, (121, 161), 0),), "res5", (48, 48), NORMALS),
    PaperRun("stanford2d3d.yaml", "stanford2d3d", (({"train": 2, "val": 2}, (100, 200), 0),), "res5", (32, 48),
             SEMANTIC + DEPTH + NORMALS),
    PaperRun("cityscapes.yaml", "cityscapes", (({"train": 2, "val": 2}, (97, 193), 0),), "res5", (48, 48),
             SEMANTIC + ("semantic/iiou", "semantic/category_iou", "semantic/category_iiou") + DEPTH),
]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _shards(run: PaperRun, root: Path) -> Path:
    from pipelines.datasets.convert import convert
    from pipelines.datasets.write_formats import write_dataset

    raw = root / "raw"
    for splits, size, seed in run.writes:
        write_dataset(run.dataset, raw, n_per_split=splits, size=size, seed=seed)
    out = root / "shards"
    convert(run.dataset, str(raw), str(out))
    return out


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.config.removesuffix(".yaml"))
def test_paper_config_runs_end_to_end_and_logs_its_benchmark(run, tmp_path, local_ray, mlflow_server):  # noqa: F811
    from pipelines.config import load_config
    from pipelines.train.curriculum import preflight, run_pipeline

    shards = _shards(run, tmp_path)
    config = load_config(ROOT / "configs" / run.config)
    place = config.stages[-1].multipool  # the config's own MultiPool place
    stages = (
        "[{name: base, iterations: 2, lr: 0.01},"
        f" {{name: rho-0_5, iterations: 2, lr: 0.01, multipool: {place}, gated: [{run.gated}], rho: 0.5, lam: 0.002}}]"
    )
    overrides = [
        "model.backbone=resnet_tiny", "model.pretrained=null", "model.head_channels=8",
        f"data.uri={shards}", f"data.crop=[{run.crop[0]}, {run.crop[1]}]", "data.eval_images=0",
        f"storage_path={tmp_path / 'runs'}", "scaling.use_gpu=false", "scaling.num_workers=1",
        "scaling.cpus_per_worker=1", "train.batch_size=1", "train.checkpoint_every=2", "train.log_every=1",
        "train.eval_every=0", f"tracking.tracking_uri={mlflow_server.uri}", f"stages={stages}",
    ]
    config = load_config(ROOT / "configs" / run.config, overrides)
    preflight(config)
    result = run_pipeline(config, progress=lambda _: None)

    client = MlflowClient(mlflow_server.uri)
    gated = result.records[-1]
    logged = client.get_run(gated.run_id).data.metrics
    # The ponder ratio needs labels that change (segmentation or boundaries).
    ponder = ("ponder/boundary_ratio",) if any(m.startswith(("semantic/", "boundary/")) for m in run.metrics) else ()
    for key in (*run.metrics, *COMPUTATION, *ponder):
        assert f"eval/{key}" in logged, (key, sorted(logged))
    assert 0 < logged["eval/macs_ratio"] <= 1
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    assert result.front and result.front[0].name == "rho-0_5"


def test_table2_config_runs_every_stage_kind_from_one_checkpoint(tmp_path, local_ray, mlflow_server):  # noqa: F811
    """configs/nyuv2_seg_table2.yaml shrunk: a base, then from it PAG, a dense control and the
    three baselines (truncation matched to PAG's evaluated multiply-adds) with the config's own
    optimiser; every point reaches the front CSV with its method, MAC and time ratios."""
    import csv

    from pipelines.config import load_config
    from pipelines.train.curriculum import preflight, run_pipeline

    run = NYUV2_SEG
    shards = _shards(run, tmp_path)
    common = "iterations: 2, lr: 0.01, multipool: res5"
    gated = "gated: [res4, res5]"
    stages = (
        f"[{{name: base, kind: dense, iterations: 2, lr: 0.01, multipool: res5}},"
        f" {{name: pag, init: base, {common}, {gated}, rho: 0.5, lam: 0.002}},"
        f" {{name: control, kind: dense, init: base, {common}}},"
        f" {{name: trunc, kind: truncated, init: base, {common}, {gated}, match: pag}},"
        f" {{name: skip, kind: layer_skip, init: base, {common}, {gated}, rho: 0.5, lam: 0.002}},"
        f" {{name: perf, kind: static_mask, init: base, {common}, {gated}, rho: 0.5, lam: 0.002}}]"
    )
    overrides = [
        "model.backbone=resnet_tiny", "model.pretrained=null", "model.head_channels=8",
        f"data.uri={shards}", "data.crop=[48, 48]", "data.eval_images=0",
        f"storage_path={tmp_path / 'runs'}", "scaling.use_gpu=false", "scaling.num_workers=1",
        "scaling.cpus_per_worker=1", "train.batch_size=1", "train.checkpoint_every=2", "train.log_every=1",
        f"tracking.tracking_uri={mlflow_server.uri}", f"stages={stages}",
    ]
    config = load_config(ROOT / "configs" / "nyuv2_seg_table2.yaml", overrides)
    preflight(config)
    result = run_pipeline(config, progress=lambda _: None)

    metrics = {r.stage: r.metrics for r in result.records}
    client = MlflowClient(mlflow_server.uri)
    for record in result.records[1:]:  # the benchmark of configs/nyuv2_seg.yaml reaches every point's run
        logged = client.get_run(record.run_id).data.metrics
        for key in (*run.metrics, *COMPUTATION, "time_ratio"):
            assert f"eval/{key}" in logged, (record.stage, key)
    assert "eval/ponder/boundary_ratio" in client.get_run(result.records[1].run_id).data.metrics
    assert metrics["control"]["macs_ratio"] == pytest.approx(1.0)
    assert "ponder/boundary_ratio" not in metrics["control"]
    # resnet_tiny gates one block in each of res4 and res5: truncation removes 1 or 2 of them.
    trunc_run = next(r for r in result.records if r.stage == "trunc")
    assert client.get_run(trunc_run.run_id).data.params["stage.truncate"] in ("1", "2")
    assert metrics["trunc"]["macs_ratio"] < 1.0
    for name in ("pag", "control", "trunc", "skip", "perf"):
        assert metrics[name]["time_ratio"] > 0, name
    front_csv = client.download_artifacts(result.parent_run_id, "front/front.csv", str(tmp_path))
    with open(front_csv) as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    assert {n: (rows[n]["kind"], rows[n]["method"]) for n in rows} == {
        "pag": ("pag", "pag"), "control": ("control", "dense"), "trunc": ("baseline", "truncated"),
        "skip": ("baseline", "layer_skip"), "perf": ("baseline", "static_mask"),
    }
    assert all(float(rows[n]["time_ratio"]) > 0 and float(rows[n]["macs_ratio"]) > 0 for n in rows)
    # Only PAG's points are registered: the baselines are comparisons, not products.
    assert set(result.versions) == {"pag"}
