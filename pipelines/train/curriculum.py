"""The paper's staged curriculum: stages in order, each trained, evaluated, logged, recorded.

Every check that can fail early (config, data paths, splits, blocks the backbone cannot
gate) runs in `preflight`, before any worker starts. Then, per stage: skip it if its done
record exists, else train it (resuming its latest checkpoint), evaluate the final
checkpoint, log metrics, PNGs and the model to the stage's child run, and write the record.
At the end: the Pareto front of the rho stages on the parent run, the front's models in the
registry with per-pipeline aliases `<pipeline_id>-<stage>` and `<pipeline_id>-champion` (best
within the budget).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from pag_model import MACRO_BLOCKS
from pag_model.tasks import TASKS, eval_fields, target_fields
from pipelines.atomic import write_json
from pipelines.checkpoint import as_checkpoint, build_model, load_checkpoint_model
from pipelines.config import ConfigError, PipelineConfig, StageConfig
from pipelines.datasets import shards
from pipelines.datasets.eval_reader import eval_batches
from pipelines.datasets.shard_check import check_split_shards
from pipelines.scoring import evaluate_model
from pipelines.tracking.front import FrontPoint, champion, pareto_front, plot_front
from pipelines.tracking.publish import publish_front
from pipelines.tracking.redaction import describe_error, redact_text
from pipelines.tracking.tracker import Tracker, default_tracking_uri
from pipelines.train.recorded import check_recorded, write_recorded
from pipelines.train.stages import (
    StageError,
    StageRecord,
    pipeline_root,
    read_record,
    train_stage,
    write_record,
)


@dataclass
class PipelineResult:
    """What a finished pipeline produced."""

    records: list[StageRecord]
    front: list[FrontPoint]
    champion: Optional[FrontPoint]
    tracking_uri: str
    parent_run_id: str
    png_dirs: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    points: list[FrontPoint] = field(default_factory=list)


def preflight(config: PipelineConfig) -> None:
    """Fail before any worker starts: data present with non-empty splits and whole shard
    files, `tracking.front_metric` a metric of the model's tasks, blocks gateable.

    Raises:
        ConfigError naming the key and value at fault.
    """
    pretrained = config.model.pretrained
    if pretrained not in (None, "timm") and not Path(pretrained).is_file():
        raise ConfigError(f"model.pretrained={pretrained!r}: no such weights file (or use timm, or null)")
    data = config.data
    try:
        manifest = shards.read_manifest(data.uri)
        for split in [*data.train_split.split("+"), data.eval_split]:
            shards.split_files(data.uri, split, manifest)
            have = manifest["splits"][split]["fields"]
            missing = [f for f in target_fields(config.model.tasks) if f not in have]
            if missing:
                raise ConfigError(
                    f"model.tasks={list(config.model.tasks)}: split {split!r} of {data.uri} lacks {missing}"
                )
        try:
            eval_fields(config.model.tasks, manifest["splits"][data.eval_split]["fields"])
        except ValueError as err:  # a benchmark field (e.g. BSDS's annotators) the split lacks
            raise ConfigError(f"data.eval_split={data.eval_split!r} of {data.uri}: {err}") from err
        check_front_metric(config, manifest["splits"][data.eval_split]["fields"])
        for split in dict.fromkeys([*data.train_split.split("+"), data.eval_split]):
            check_split_shards(data.uri, split, manifest)
    except shards.ShardError as err:
        raise ConfigError(f"data.uri={data.uri!r}: {err}") from err
    classes = len(manifest["class_names"])
    if "semantic" in config.model.tasks and classes and classes != config.model.num_classes:
        raise ConfigError(
            f"model.num_classes={config.model.num_classes}: the dataset at {data.uri} has {classes} classes"
        )
    last = config.stages[-1]
    model = {**config.to_dict()["model"], "pretrained": None}  # no download just to check
    try:
        net = build_model(model, asdict(last))
    except ValueError as err:
        raise ConfigError(f"stages.{last.name}: {err}") from err
    gated = {name.split(".")[1] for name, _ in net.gated_blocks()}
    for stage in config.stages:
        empty = [b for b in stage.gated if MACRO_BLOCKS[b] not in gated]
        if empty:
            raise ConfigError(
                f"stages.{stage.name}.gated={list(stage.gated)}: {config.model.backbone} has no stride-1 "
                f"bottleneck to gate in {empty}"
            )


def front_metrics(tasks: Sequence[str], eval_split_fields: Sequence[str]) -> list[str]:
    """The task metrics the library evaluation reports for `tasks` on a split with these
    fields (`<task>/<name>`, names from each task meter's KEYS; Cityscapes' instance metrics
    only where the split has instance ids)."""
    names = []
    for task in tasks:
        meter = TASKS[task].meter
        keys = list(meter.KEYS.values())
        if "instances" in eval_split_fields:
            keys += list(getattr(meter, "CITYSCAPES_KEYS", {}).values())
        names += [f"{task}/{key}" for key in keys]
    return names


def check_front_metric(config: PipelineConfig, eval_split_fields: Sequence[str]) -> None:
    """ConfigError unless `tracking.front_metric` is a metric the evaluation produces for the
    model's tasks (found before training, not when the front is published)."""
    allowed = front_metrics(config.model.tasks, eval_split_fields)
    if config.tracking.front_metric not in allowed:
        raise ConfigError(
            f"tracking.front_metric={config.tracking.front_metric!r}: not a metric of model.tasks="
            f"{list(config.model.tasks)} on split {config.data.eval_split!r}; one of {allowed}"
        )


def check_resources(config: PipelineConfig, cluster: dict[str, float], autoscaling: bool) -> None:
    """Fail before training when the cluster cannot hold one stage's workers.

    A fixed cluster (a local Ray) that lacks the GPUs or CPUs `scaling` asks for would make
    Ray Train wait for them forever; an autoscaling cluster may still add them, so it is
    not checked.

    Raises:
        ConfigError naming the scaling key, what it asks for and what the cluster has.
    """
    if autoscaling:
        return
    scaling = config.scaling
    gpus = scaling.num_workers * scaling.gpus_per_worker if scaling.use_gpu else 0.0
    if gpus > cluster.get("GPU", 0.0):
        raise ConfigError(
            f"scaling.use_gpu=true: {scaling.num_workers} worker(s) x {scaling.gpus_per_worker} GPU need {gpus:g} "
            f"GPU(s), and no GPU was found (the Ray cluster has {cluster.get('GPU', 0.0):g}); "
            "set scaling.use_gpu=false to train on CPUs"
        )
    cpus = scaling.num_workers * scaling.cpus_per_worker
    if cpus > cluster.get("CPU", 0.0):
        raise ConfigError(
            f"scaling.num_workers={scaling.num_workers} x scaling.cpus_per_worker={scaling.cpus_per_worker:g} "
            f"need {cpus:g} CPUs; the Ray cluster has {cluster.get('CPU', 0.0):g}"
        )


def open_tracker(config: PipelineConfig) -> Tracker:
    """The pipeline's MLflow tracker (connecting to the server: call it before Ray starts).

    Raises:
        ConfigError naming the (redacted) tracking URI when MLflow cannot be reached.
    """
    tracking_uri = config.tracking.tracking_uri or default_tracking_uri(config.storage_path)
    try:
        return Tracker(tracking_uri, config.tracking.experiment)
    except Exception as err:  # MlflowException, requests' ConnectionError, sqlalchemy's errors
        first = describe_error(err).splitlines()[0]
        raise ConfigError(f"tracking.tracking_uri={redact_text(tracking_uri)!r}: cannot reach MLflow ({first})") from None


def run_pipeline(
    config: PipelineConfig,
    progress: Callable[[str], None] = print,
    tracker: Optional[Tracker] = None,
) -> PipelineResult:
    """Run (or continue) every stage, then publish the front and register its models.

    The parent run ends FINISHED, or FAILED when a stage or the publishing fails.

    Raises:
        ConfigMismatch: the pipeline id was started with another config (`recorded`).
    """
    check_recorded(config)
    tracker = tracker or open_tracker(config)
    write_recorded(config)
    tracking_uri = tracker.tracking_uri
    parent = tracker.parent_run(config.pipeline_id, config.to_dict())
    records: list[StageRecord] = []
    png_dirs: dict[str, str] = {}
    prev: Optional[StageRecord] = None
    for index, stage in enumerate(config.stages):
        head = f"stage {index + 1}/{len(config.stages)} {stage.name}"
        done = read_record(config, stage)
        if done is not None:
            progress(f"{head}: already done ({done.checkpoint}), skipped")
            records.append(done)
            prev = done
            continue
        init = prev if stage.init is None else next(r for r in records if r.stage == stage.init)
        resolved = resolve_stage(config, index, records)
        child = tracker.child_run(parent, config.pipeline_id, stage.name, {"stage": asdict(resolved.stages[index])})
        progress(f"{head}: training {stage.iterations} iterations (MLflow run {child})")
        start = time.monotonic()
        try:
            record = train_stage(resolved, index, init, child, tracking_uri)
            png_dir = finish_stage(resolved, tracker, record)
        except BaseException:
            tracker.finish(child, "FAILED")
            tracker.finish(parent, "FAILED")
            raise
        write_record(config, record)
        tracker.finish(child)
        png_dirs[stage.name] = png_dir
        progress(f"{head}: done in {time.monotonic() - start:.0f}s: {_summary(record.metrics)}")
        records.append(record)
        prev = record
    try:
        points, best, versions = _publish(config, tracker, parent, records)
    except BaseException:
        tracker.finish(parent, "FAILED")
        raise
    tracker.finish(parent)
    front = pareto_front([p for p in points if p.extra["kind"] == "pag"])
    return PipelineResult(records, front, best, tracking_uri, parent, png_dirs, versions, points)


def resolve_stage(config: PipelineConfig, index: int, records: Sequence[StageRecord]) -> PipelineConfig:
    """`config` with stage `index` made concrete: a truncated stage with `match` gets the
    `truncate` (number of top blocks) whose multiply-add ratio is closest to the matched
    stage's evaluated `macs_ratio` (computed on a crop-sized input, the ratio does not depend
    on the size). Other stages come back unchanged."""
    stage = config.stages[index]
    if stage.kind != "truncated" or stage.match is None:
        return config
    target = next(r for r in records if r.stage == stage.match).metrics["macs_ratio"]
    model = {**config.to_dict()["model"], "pretrained": None}
    blocks = truncation_for_ratio(model, asdict(stage), target, tuple(config.data.crop))
    stages = list(config.stages)
    stages[index] = replace(stage, truncate=blocks)
    return replace(config, stages=stages)


def truncation_for_ratio(model: dict, stage: dict, target: float, size: tuple[int, int]) -> int:
    """The number of top gated blocks to truncate whose multiply-add ratio to the dense
    network is closest to `target` (ties: fewer blocks). `count_macs`'s own ratio is that
    ratio: a truncated block's dense count is its 3x3 conv at every pixel, and open or closed
    gates compute no logits."""
    import torch

    from pag_model.flops import count_macs

    image = torch.zeros(1, 3, *size)
    blocks = len(build_model(model, {**stage, "truncate": None}).gated_blocks())
    gaps = []
    for k in range(1, blocks + 1):
        net = build_model(model, {**stage, "truncate": k}).eval()
        gaps.append((abs(float(count_macs(net, image).ratio[0]) - target), k))
    return min(gaps)[1]


def finish_stage(config: PipelineConfig, tracker: Tracker, record: StageRecord) -> str:
    """Evaluate the stage's final checkpoint; log metrics, PNGs and the model to its run."""
    eval_root = pipeline_root(config)
    local = "://" not in eval_root
    png_dir = Path(eval_root) / "eval" / record.stage if local else Path(tempfile.mkdtemp()) / record.stage
    with as_checkpoint(record.checkpoint).as_directory() as ckpt_dir:
        net = load_checkpoint_model(ckpt_dir)
    stage = next(s for s in config.stages if s.name == record.stage)
    calibration = calibrate(net, config, stage) if stage.calibrate else {}
    tasks = config.model.tasks
    batches = eval_batches(config.data.uri, config.data.eval_split, tasks, config.data.eval_images)
    class_names = shards.read_manifest(config.data.uri).get("class_names") or None
    metrics = evaluate_model(net, batches, tasks, config.model.num_classes, png_dir=png_dir, class_names=class_names)
    metrics.update(calibration)
    metrics.update(measured_time(net, config))
    record.metrics = metrics
    tracker.log_metrics(record.run_id, {f"eval/{k}": v for k, v in metrics.items()}, record.iterations)
    write_json(png_dir / "metrics.json", metrics)
    for path in sorted(png_dir.iterdir()):
        tracker.log_file(record.run_id, path, "eval")
    record.model_uri = tracker.log_model(record.run_id, net, config.to_dict()["model"], asdict(stage))
    return str(png_dir)


def point_kind(stage: StageConfig) -> Optional[tuple[str, str]]:
    """(kind, method) of a stage's point on the front, or None for a stage that is not a
    point (the base and other steps of the curriculum): PAG stages with a rho ("pag", "pag"),
    the Table 2 baselines ("baseline", their kind), a dense stage branching off an earlier
    one with `init` ("control", "dense": same start, same iterations, no gates)."""
    if stage.kind == "pag":
        return ("pag", "pag") if stage.rho is not None else None
    if stage.kind == "dense":
        return ("control", "dense") if stage.init is not None else None
    return ("baseline", stage.kind)


POINT_METRICS = ("semantic/miou", "depth/delta1", "macs_ratio", "time_ratio", "ponder/boundary_ratio")


def stage_points(config: PipelineConfig, records: Sequence[StageRecord]) -> list[FrontPoint]:
    """Every stage that is a point (`point_kind`), with kind, method, rho, cost ratios and
    the front metric in `extra`.

    Raises:
        StageError: a point lacks `tracking.front_metric`.
    """
    metric = config.tracking.front_metric
    stages = {s.name: s for s in config.stages}
    points = []
    for r in records:
        kind = point_kind(stages[r.stage])
        if kind is None:
            continue
        if metric not in r.metrics:
            raise StageError(
                f"tracking.front_metric={metric!r}: stage {r.stage} has no such metric "
                f"(it has {sorted(r.metrics)})"
            )
        extra = {"kind": kind[0], "method": kind[1], "rho": stages[r.stage].rho, "model_uri": r.model_uri,
                 "dense_macs": r.metrics["dense_macs"]}
        extra.update({k: r.metrics[k] for k in POINT_METRICS if k in r.metrics})
        points.append(FrontPoint(r.stage, r.metrics["macs"], r.metrics[metric], extra))
    return points


CALIBRATION_IMAGES = 64
TIMING_IMAGES = 4  # of the evaluation split, of the first image's size


def measured_time(net, config: PipelineConfig) -> dict[str, float]:
    """Wall-clock time per image of `net` with perforated inference against its dense model
    (no gates), both BN-folded and channels-last on the evaluation device, interleaved
    (`pag_model.timing.measure_time_ratio`), on the first evaluation images."""
    import torch

    from pag_model.evaluation import pad_to_multiple
    from pag_model.timing import measure_time_ratio

    images = []
    for batch in eval_batches(config.data.uri, config.data.eval_split, config.model.tasks, TIMING_IMAGES):
        if images and batch["image"].shape != images[0].shape:
            break
        images.append(batch["image"])
    timed = measure_time_ratio(net, pad_to_multiple(torch.cat(images), net.output_stride))
    return {"time_ratio": timed.ratio, "time/perforated_s": timed.perforated_s, "time/dense_s": timed.dense_s}


def calibrate(net, config: PipelineConfig, stage: StageConfig) -> dict[str, float]:
    """Calibrate `net`'s gates to `stage.rho` on the first CALIBRATION_IMAGES training images
    (never the evaluation split); returns the mean density before and after as metrics."""
    from pag_model.calibration import calibrate_densities
    from pag_model.evaluation import pad_to_multiple

    split = config.data.train_split.split("+")[0]
    batches = eval_batches(config.data.uri, split, config.model.tasks, CALIBRATION_IMAGES)
    images = (pad_to_multiple(b["image"], net.output_stride) for b in batches)
    layers = calibrate_densities(net, images, stage.rho)
    return {
        "calibration/density_before": sum(c.before for c in layers) / len(layers),
        "calibration/density_after": sum(c.after for c in layers) / len(layers),
        "calibration/images": float(CALIBRATION_IMAGES),
    }


def _publish(
    config: PipelineConfig,
    tracker: Tracker,
    parent: str,
    records: Sequence[StageRecord],
) -> tuple[list[FrontPoint], Optional[FrontPoint], dict[str, str]]:
    """Front CSV + PNG of every point on the parent run; the PAG points registered with
    aliases and tags, the best within the budget as the champion."""
    points = stage_points(config, records)
    pag = [p for p in points if p.extra["kind"] == "pag"]
    if not points:
        return [], None, {}
    best = None
    aliases = {p.name: [stage_alias(config.pipeline_id, p.name)] for p in pag}
    if pag:
        budget = config.tracking.budget * max(p.extra["dense_macs"] for p in pag)
        best = champion(pag, budget)
        if best is not None:
            aliases[best.name].append(champion_alias(config.pipeline_id))
    versions = publish_front(
        tracker, parent, points, config.tracking.front_metric, plot_front, config.tracking.registered_model,
        config.pipeline_id, pag, aliases,
    )
    return points, best, versions


def stage_alias(pipeline_id: str, stage: str) -> str:
    """Registry alias of a stage's version: `<pipeline_id>-<stage>` (both are letters, digits,
    - and _, what MLflow aliases allow), unique per point even when two stages share a rho and
    when pipelines share a registered-model name."""
    return f"{pipeline_id}-{stage}"


def champion_alias(pipeline_id: str) -> str:
    """`<pipeline_id>-champion`: each pipeline's own champion, so pipelines that register
    into the same model name never move each other's."""
    return f"{pipeline_id}-champion"


def _summary(metrics: dict[str, float]) -> str:
    keys = ("semantic/miou", "depth/delta1", "normals/mean", "boundary/ods", "macs_ratio", "ponder/boundary_ratio")
    return ", ".join(f"{k}={metrics[k]:.3f}" for k in keys if k in metrics)


def front_table(result: PipelineResult, config: PipelineConfig) -> str:
    """Plain-text table of every stage: kind, rho, multiply-adds and their ratio to dense,
    measured time ratio, mIoU, depth delta1, ponder ratio near boundaries."""
    stages = {s.name: s for s in config.stages}
    on_front = {p.name for p in result.front}
    lines = [
        f"{'stage':<16}{'method':<12}{'rho':>5}{'GMACs':>8}{'MACs':>6}{'time':>6}{'mIoU':>7}{'delta1':>7}{'ponder':>7}  front"
    ]
    for r in result.records:
        m, stage = r.metrics, stages[r.stage]
        kind = point_kind(stage)
        method = kind[1] if kind else stage.kind
        rho = "-" if stage.rho is None else f"{stage.rho:g}"
        mark = "*" if r.stage in on_front else ""
        champ = " champion" if result.champion is not None and result.champion.name == r.stage else ""
        lines.append(
            f"{r.stage:<16}{method:<12}{rho:>5}{m.get('macs', 0) / 1e9:>8.4f}{m.get('macs_ratio', 1):>6.2f}"
            f"{_fmt(m, 'time_ratio', 6, 2)}{_fmt(m, 'semantic/miou', 7, 3)}{_fmt(m, 'depth/delta1', 7, 3)}"
            f"{_fmt(m, 'ponder/boundary_ratio', 7, 2)}  {mark}{champ}"
        )
    return "\n".join(lines)


def _fmt(metrics: dict[str, float], key: str, width: int, digits: int) -> str:
    value = metrics.get(key)
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"
