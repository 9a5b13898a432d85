"""A Ray Tune sweep over lambda, the tau schedule and rho; the Pareto front in MLflow.

Each trial is a Tune function (`run_trial`) that runs the config's sparsity stages from
`sweep.base`, one TorchTrainer per stage through the staged pipeline's own stage runner
(`pipelines.train.stages.train_stage`: same training loop, done records, resumable Ray Train runs),
evaluates each stage's final checkpoint and reports the task metric (`score`) and measured
multiply-adds (`macs`) to Tune after each stage, which is what NSGA-II and ASHA rank.

Resubmitting the same sweep id restores the Tune experiment from `<storage>/<sweep_id>/tune`
(finished trials are kept, unfinished ones continue; inside a trial, finished stages are
skipped by their records and an unfinished stage resumes its latest checkpoint). A trial that
raises is retried `sweep.max_failures` times, then reported (trial table, child run FAILED
with the error as a tag); the sweep goes on.

At the end, on the sweep's parent run: `sweep/trials.csv` (every trial), `front/front.csv`
(the non-dominated set over finished trials and the curriculum's rho stages, via
pipelines/tracking/front.py) and `front/front.png` (all points, front highlighted, labelled with rho
and lambda). Front models are registered as versions of `<tracking.registered_model>-<sweep_id>`
with `flops-<budget>` aliases (the best front model within each budget) and tags.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from pipelines.config import PipelineConfig, SweepConfig, from_dict, parse_sweep
from pipelines.datasets import storage
from pipelines.sweeps.base import resolve_base
from pipelines.sweeps.publish import (
    SweepResult,
    TrialRow,
    curriculum_points,
    publish,
    trial_points,
)
from pipelines.sweeps.space import (
    COST,
    SCORE,
    check_space,
    expected_trials,
    max_concurrent,
    param_space,
    scheduler,
    search_algorithm,
    trial_config,
    trial_values,
)
from pipelines.tracking.tracker import Tracker, default_tracking_uri
from pipelines.train.curriculum import finish_stage, preflight
from pipelines.train.stages import StageRecord, read_record, train_stage, write_record

TAG_ERROR = "pag_error"


class SweepInterrupted(RuntimeError):
    """Tune stopped before every trial ended (SIGINT/SIGUSR1); the same sweep id resumes."""


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs besides its sampled values (passed with tune.with_parameters).

    Args:
        pipeline: the pipeline config as a plain dict (`PipelineConfig.to_dict`).
        sweep: the sweep section as a plain dict (`SweepConfig.to_dict`).
        tracking_uri: MLflow tracking URI.
        parent_run_id: the sweep's parent run.
        base_checkpoint: URI of the checkpoint every trial starts from.
        trials_root: storage under which each trial's stages train (`<root>/<trial_id>/`).
    """

    pipeline: dict
    sweep: dict
    tracking_uri: str
    parent_run_id: str
    base_checkpoint: str
    trials_root: str


def run_trial(config: dict[str, Any], context: SweepContext) -> None:
    """The Tune function of one trial: its sparsity stages, one TorchTrainer each.

    Reports after every stage: `score` (tracking.front_metric), `macs`, the other
    evaluation metrics, the stage's checkpoint, model URI and child run id.
    """
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    pipeline = from_dict(context.pipeline)
    sweep = parse_sweep(context.sweep)
    values = trial_values(sweep, config)
    trial = trial_config(pipeline, values, trial_id, context.trials_root)
    tracker = Tracker(context.tracking_uri, pipeline.tracking.experiment)
    params = {"trial": {**values, "trial_id": trial_id}, "stages": {s.name: asdict(s) for s in trial.stages}}
    child = tracker.child_run(context.parent_run_id, sweep.sweep_id, trial_id, params)
    prev = StageRecord("base", -1, context.base_checkpoint, 0)
    try:
        for index, stage in enumerate(trial.stages):
            record = read_record(trial, stage)
            if record is None:
                record = train_stage(trial, index, prev, child, context.tracking_uri)
                finish_stage(trial, tracker, record)
                write_record(trial, record)
            metrics = record.metrics
            tune.report(
                {
                    SCORE: metrics[pipeline.tracking.front_metric],
                    COST: metrics["macs"],
                    "macs_ratio": metrics["macs_ratio"],
                    "dense_macs": metrics["dense_macs"],
                    "stage": stage.name,
                    "stage_index": index,
                    "rho": stage.rho,
                    "checkpoint": record.checkpoint,
                    "model_uri": record.model_uri,
                    "run_id": child,
                    **{f"eval/{k}": v for k, v in metrics.items()},
                }
            )
            prev = record
    except BaseException as err:
        tracker.client.set_tag(child, TAG_ERROR, f"{type(err).__name__}: {err}"[:4000])
        tracker.finish(child, "FAILED")
        raise
    tracker.log_metrics(child, {SCORE: metrics[pipeline.tracking.front_metric], COST: metrics["macs"]}, 0)
    tracker.finish(child)


def run_sweep(
    pipeline: PipelineConfig,
    sweep: SweepConfig,
    progress: Callable[[str], None] = print,
) -> SweepResult:
    """Run the sweep, or restore and finish it when its Tune experiment exists; publish."""
    import ray
    from ray import tune

    tracking_uri = pipeline.tracking.tracking_uri or default_tracking_uri(pipeline.storage_path)
    tracker = Tracker(tracking_uri, pipeline.tracking.experiment)
    parent = tracker.parent_run(
        sweep.sweep_id, {"pipeline": pipeline.to_dict(), "sweep": sweep.to_dict()}, kind="sweep"
    )
    root = sweep_root(pipeline, sweep)
    try:
        base = resolve_base(sweep, pipeline, tracking_uri, storage.join(root, "base"))
        context = SweepContext(
            pipeline.to_dict(), sweep.to_dict(), tracking_uri, parent, base, storage.join(root, "trials")
        )
        trainable = tune.with_resources(tune.with_parameters(run_trial, context=context), {"cpu": sweep.trial_cpus})
        fs, fs_root = storage.filesystem(root)
        path = storage.join(root, "tune")
        if tune.Tuner.can_restore(path, storage_filesystem=fs if "://" in root else None):
            progress(f"sweep {sweep.sweep_id}: resuming the Tune experiment in {path}")
            tuner = tune.Tuner.restore(
                path,
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=False,
                storage_filesystem=fs if "://" in root else None,
            )
        else:
            concurrent = max_concurrent(sweep, pipeline, ray.cluster_resources())
            progress(f"sweep {sweep.sweep_id}: {sweep.num_samples} sample(s), {sweep.algorithm}, {concurrent} at once")
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(sweep),
                tune_config=tune.TuneConfig(
                    search_alg=search_algorithm(sweep, concurrent),
                    scheduler=scheduler(sweep, len(pipeline.stages)),
                    num_samples=sweep.num_samples,
                    trial_dirname_creator=trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name="tune",
                    storage_path=fs_root,
                    storage_filesystem=fs,
                    failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                    verbose=1,
                ),
            )
        grid = tuner.fit()
        ended = sum(1 for result in grid if trial_ended(result))
        if ended < expected_trials(sweep):
            raise SweepInterrupted(
                f"sweep {sweep.sweep_id}: interrupted with {ended} of {expected_trials(sweep)} trials ended; "
                f"resubmit with --sweep-id {sweep.sweep_id} to resume from {path}"
            )
        trials = [_trial_row(sweep, r) for r in grid]
        for row in trials:
            if row.status == "error":
                progress(f"trial {row.trial_id} {row.values} failed: {row.error.splitlines()[-1] if row.error else ''}")
            elif row.status == "done" and row.metrics.get("stage_index") != len(pipeline.stages) - 1:
                # ASHA stopped it after an earlier stage: its run never reached its own finish().
                tracker.client.set_tag(row.metrics["run_id"], "pag_stopped_early", f"after {row.metrics['stage']}")
                tracker.finish(row.metrics["run_id"])
        points = trial_points(trials) + curriculum_points(sweep, pipeline)
        result = publish(pipeline, sweep, tracker, parent, trials, points)
    except SweepInterrupted:
        tracker.finish(parent, "KILLED")
        raise
    except BaseException:
        tracker.finish(parent, "FAILED")
        raise
    tracker.finish(parent)
    return result


def trial_ended(result: Any) -> bool:
    """Whether a trial of the ResultGrid is over: it raised, or it ended by itself or by the
    scheduler (ASHA), both of which make Tune mark its last result `done`.

    Not `status == TERMINATED`: on an interruption Tune's cleanup marks the trials whose actors
    were running or starting TERMINATED too, without a `done` result (and some with no result).
    """
    return result.error is not None or bool((result.metrics or {}).get("done"))


def sweep_root(pipeline: PipelineConfig, sweep: SweepConfig) -> str:
    """`<storage_path>/<sweep_id>` (absolute for local paths, as Ray requires)."""
    path = pipeline.storage_path
    if "://" not in path:
        path = str(Path(path).resolve())
    return storage.join(path.rstrip("/"), sweep.sweep_id)


def trial_dirname(trial: Any) -> str:
    """The trial's directory under `<sweep>/tune/`: its id (Tune's default appends every value)."""
    return trial.trial_id


def _trial_row(sweep: SweepConfig, result: Any) -> TrialRow:
    metrics = dict(result.metrics or {})
    trial_id = metrics.get("trial_id") or Path(result.path).name
    values = trial_values(sweep, {k: v for k, v in (result.config or {}).items() if k in sweep.space})
    if result.error is not None:
        return TrialRow(trial_id, "error", values, metrics, f"{type(result.error).__name__}: {result.error}")
    if SCORE not in metrics:
        return TrialRow(trial_id, "no result", values, metrics)
    return TrialRow(trial_id, "done", values, metrics)


def preflight_sweep(pipeline: PipelineConfig, sweep: SweepConfig) -> None:
    """Config checks before any worker starts: the space, the data, gateable blocks.

    Raises:
        ConfigError naming the key and value at fault.
    """
    check_space(pipeline, sweep)
    gated = sweep.space.get("gated")
    options = [None] if gated is None else (list(gated.choices) if gated.searched else [gated.value])
    for option in options:
        values = {} if option is None else {"gated": option}
        preflight(trial_config(pipeline, values, "preflight", pipeline.storage_path))
