"""Stage runner: one Ray Train TorchTrainer per curriculum stage, restartable.

Names are deterministic: stage i of pipeline P trains as Ray Train run `P-<i>-<stage>` under
`<storage_path>/P/`, so re-running the same pipeline id finds its own state:

- a finished stage has an atomic "stage done" record (`<storage>/P/stages/<stage>.done.json`:
  checkpoint URI, iterations, metrics, MLflow run id) and is skipped;
- an unfinished stage re-uses its Ray Train run name, and Ray Train hands the training loop
  the latest checkpoint of that run (`ray.train.get_checkpoint()`), so it resumes there.

A worker that dies mid-stage is restarted by Ray Train (`FailureConfig(max_failures)`) and
resumes from the last checkpoint the same way. A non-finite loss ends the stage with
`NonFiniteLossError`, naming the last good checkpoint, which stays in place.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from pipelines.checkpoint import as_checkpoint, checkpoint_uri
from pipelines.config import PipelineConfig, StageConfig
from pipelines.datasets import storage
from pipelines.datasets.ray_pipeline import DataResources, ingest_options, train_dataset
from pipelines.train.loop import train_loop_per_worker


class StageError(RuntimeError):
    """A stage that did not finish."""


class NonFiniteLossError(StageError):
    """Training produced a NaN or infinite loss."""


@dataclass
class StageRecord:
    """What a finished stage left behind (the "stage done" record).

    Args:
        stage: stage name.
        index: position in the curriculum.
        checkpoint: URI of the final checkpoint directory (local path or s3://...).
        iterations: iterations trained.
        run_id: the stage's MLflow child run.
        metrics: evaluation metrics at the end of the stage.
        model_uri: the MLflow logged model, when logged.
    """

    stage: str
    index: int
    checkpoint: str
    iterations: int
    run_id: Optional[str] = None
    metrics: dict[str, float] = field(default_factory=dict)
    model_uri: Optional[str] = None


def run_name(pipeline_id: str, index: int, stage: StageConfig) -> str:
    """Ray Train run name of stage `index`: `<pipeline>-<index:02d>-<stage>`."""
    return f"{pipeline_id}-{index:02d}-{stage.name}"


def pipeline_root(config: PipelineConfig) -> str:
    """`<storage_path>/<pipeline_id>`, the pipeline's own directory (local or s3://)."""
    return storage.join(_storage_path(config.storage_path), config.pipeline_id)


def record_uri(config: PipelineConfig, stage: StageConfig) -> str:
    return storage.join(pipeline_root(config), "stages", f"{stage.name}.done.json")


def read_record(config: PipelineConfig, stage: StageConfig) -> Optional[StageRecord]:
    """The stage's done record, or None when the stage has not finished."""
    uri = record_uri(config, stage)
    if not storage.exists(uri):
        return None
    try:
        return StageRecord(**json.loads(storage.read_bytes(uri)))
    except (ValueError, TypeError) as err:
        raise StageError(f"{uri}: unreadable stage record ({err}); delete it to re-run the stage") from err


def write_record(config: PipelineConfig, record: StageRecord) -> str:
    """Write the done record atomically (temp file + rename locally; one PUT on S3)."""
    uri = record_uri(config, config.stages[record.index])
    if not uri.startswith("s3://"):
        from pathlib import Path

        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(uri, json.dumps(asdict(record), indent=2, sort_keys=True).encode())
    return uri


def train_stage(
    config: PipelineConfig,
    index: int,
    init: Optional[StageRecord],
    run_id: Optional[str],
    tracking_uri: Optional[str],
) -> StageRecord:
    """Train stage `index` with one TorchTrainer; resume its Ray Train run if it exists.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
        StageError: training failed beyond `max_failures` or produced no checkpoint.
    """
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer


    stage = config.stages[index]
    check_resume_checkpoint(config, index)
    scaling = config.scaling
    marker = storage.join(pipeline_root(config), "stages", f"{stage.name}.nonfinite.json")
    _remove(marker)
    resources = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = scaling.gpus_per_worker
    loop_config = {
        "model": config.to_dict()["model"],
        "stage": asdict(stage),
        "train": asdict(config.train),
        "init_checkpoint": as_checkpoint(init.checkpoint) if init else None,
        "tracking_uri": tracking_uri,
        "run_id": run_id,
        "eval": _eval_args(config) if config.train.eval_every else None,
        "nonfinite_marker": marker,
    }
    fs, root = storage.filesystem(pipeline_root(config))
    data_limits = DataResources(cpu=_data_cpus(config), object_store_bytes=256 << 20)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name(config.pipeline_id, index, stage),
            storage_path=root,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={"train": _train_data(config, stage, data_limits, train_dataset)},
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest_options(data_limits)),
    )
    try:
        result = trainer.fit()
    except Exception as err:  # Ray wraps worker errors in TrainingFailedError
        raise StageError(f"stage {stage.name!r} failed after {config.train.max_failures} restart(s): {err}") from err
    metrics = dict(result.metrics or {})
    last_good = checkpoint_uri(result.checkpoint) if result.checkpoint is not None else None
    if storage.exists(marker):
        info = json.loads(storage.read_bytes(marker))
        raise NonFiniteLossError(
            f"stage {stage.name!r}: non-finite loss ({info['loss']}) at iteration "
            f"{info['iteration']}; training stopped. Last good checkpoint: {last_good} "
            f"(lower stages.{stage.name}.lr or stages.{stage.name}.lam, or check the data)"
        )
    if last_good is None or metrics.get("iteration") != stage.iterations:
        raise StageError(
            f"stage {stage.name!r} ended at iteration {metrics.get('iteration')} of {stage.iterations} "
            f"with checkpoint {last_good}"
        )
    return StageRecord(stage.name, index, last_good, stage.iterations, run_id)


SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's list of a run's checkpoints


def check_resume_checkpoint(config: PipelineConfig, index: int) -> Optional[str]:
    """The checkpoint an unfinished stage will resume from, checked before Ray Train reads it.

    Ray Train resumes a run from the latest checkpoint its snapshot names; a torn `state.pt`
    there (a full disk, a copy cut short) would fail every worker restart and end the stage
    with a misleading "failed after N restart(s)". The check: the snapshot parses, the
    checkpoint directory exists, and its `state.pt` is a whole archive (the zip directory at
    its end reads: one small read, no tensor is loaded). Returns the checkpoint URI, or
    None when the stage has no run yet.

    Raises:
        StageError naming the file, what is wrong and how to recover.
    """
    import zipfile

    from pipelines.checkpoint import STATE_FILE

    stage = config.stages[index]
    run_dir = storage.join(pipeline_root(config), run_name(config.pipeline_id, index, stage))
    snapshot = storage.join(run_dir, SNAPSHOT_FILE)
    if not storage.exists(snapshot):
        return None
    recover = (
        f"to recover, delete the directory {run_dir}: stage {stage.name!r} then trains again from its start "
        "(earlier stages are kept; Ray Train cannot skip one checkpoint of a run)"
    )
    try:
        latest = json.loads(storage.read_bytes(snapshot)).get("latest_checkpoint_result")
    except ValueError as err:
        raise StageError(f"stage {stage.name!r}: {snapshot} is not readable JSON ({err}); {recover}") from None
    if not latest:
        return None
    checkpoint = storage.join(run_dir, latest["checkpoint_dir_name"])
    state = storage.join(checkpoint, STATE_FILE)
    if not storage.exists(state):
        raise StageError(
            f"stage {stage.name!r}: the checkpoint to resume from, {checkpoint}, has no {STATE_FILE}; {recover}"
        )
    fs, path = storage.filesystem(state)
    try:
        with fs.open_input_file(path) as handle:
            zipfile.ZipFile(handle).close()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise StageError(
            f"stage {stage.name!r}: the checkpoint to resume from is torn: {state} is not a whole "
            f"torch archive ({err}); {recover}"
        ) from None
    return checkpoint


def _remove(uri: str) -> None:
    """Delete a file if it exists (local or S3)."""
    if storage.exists(uri):
        fs, path = storage.filesystem(uri)
        fs.delete_file(path)
    elif "://" not in uri:
        from pathlib import Path

        Path(uri).parent.mkdir(parents=True, exist_ok=True)


def _train_data(config: PipelineConfig, stage: Any, limits: Any, train_dataset: Any) -> Any:
    """The training split(s), shuffled by the stage's seed; `train+val` trains on the union
    (BSDS500's protocol)."""
    splits = config.data.train_split.split("+")
    seed = config.train.seed if stage.seed is None else stage.seed
    parts = [
        train_dataset(
            config.data.uri, split, config.data.crop, config.model.tasks, seed=seed, resources=limits
        )
        for split in splits
    ]
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def _data_cpus(config: PipelineConfig) -> Optional[float]:
    """CPUs Ray Data may use: what the cluster has beyond the Train workers (at least 1)."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 0))
    left = total - config.scaling.num_workers * config.scaling.cpus_per_worker
    return max(1.0, left)


def _eval_args(config: PipelineConfig) -> dict[str, Any]:
    return {
        "uri": config.data.uri,
        "split": config.data.eval_split,
        "tasks": list(config.model.tasks),
        "max_images": config.data.eval_images,
    }


def _storage_path(path: str) -> str:
    """Absolute local paths (Ray Train requires them); URIs unchanged."""
    if "://" in path:
        return path.rstrip("/")
    from pathlib import Path

    return str(Path(path).resolve())
