"""MLflow tracking for staged pipelines and sweeps: runs, metrics, artifacts, front, registry.

- One parent run per pipeline (or sweep), one child run per stage (or trial). Runs are found
  again by their tags, so re-running a pipeline id, or restarting a stage, continues the same
  runs instead of creating duplicates; the child run id also travels in every checkpoint.
- Workers log through `RankZeroLogger`: only world rank 0 talks to MLflow.
- Params are the flattened config (logged once, when a run is created); metrics carry the
  training iteration as step; artifacts are the resolved config, metrics JSON and PNGs.
- Models are logged as files that load without running code (safetensors weights and the
  JSON settings that rebuild the network, `pipelines.checkpoint.export_model`); the registry
  gets versions with aliases (`<pipeline_id>-<stage>`, `<pipeline_id>-champion`) and tags (multiply-adds, metrics,
  stage, pipeline id). Only MLflow's client API is used: no process-wide MLflow state.
- With no tracking URI the store is a SQLite file in the run directory, artifacts beside it.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from torch import nn

from pipelines.checkpoint import export_model
from pipelines.config import flatten
from pipelines.tracking.redaction import redact
from pipelines.tracking.scope import quiet_run_urls

TAG_PIPELINE = "pag_pipeline_id"
TAG_KIND = "pag_kind"
TAG_STAGE = "pag_stage"
TAG_ARCHIVED = "pag_restarted_as"
PARENT_TAG = "mlflow.parentRunId"
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
MODEL_ARTIFACT = "model"


def parse_runs_uri(uri: str) -> tuple[str, str]:
    """`runs:/<run_id>/<path>` -> (run_id, path); ValueError naming the URI otherwise."""
    rest = uri[len("runs:/"):] if uri.startswith("runs:/") else ""
    run_id, _, path = rest.partition("/")
    if not run_id or not path:
        raise ValueError(f"model URI {uri!r}: expected runs:/<run_id>/<artifact path>")
    return run_id, path


def default_tracking_uri(storage_path: str) -> str:
    """`sqlite:///<storage_path>/mlflow.db` for a local storage path.

    Raises:
        ValueError: for a remote storage path, where a tracking server URI is required.
    """
    if "://" in storage_path:
        raise ValueError(
            f"storage_path={storage_path!r} is remote: set tracking.tracking_uri (or --tracking-uri) "
            "to an MLflow server; the SQLite default only works for a local storage path"
        )
    root = Path(storage_path).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def default_artifact_location(tracking_uri: str) -> Optional[str]:
    """Artifacts beside a SQLite store (MLflow's default would be ./mlruns of the cwd)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


class Tracker:
    """Driver-side MLflow access for one experiment."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_location: Optional[str] = None,
    ) -> None:
        """
        Args:
            tracking_uri: `http://host:port`, `sqlite:///path/mlflow.db`, ...
            experiment: experiment name (created when missing).
            artifact_location: root for the experiment's artifacts when it is created
                (default: beside a SQLite store, the server's choice otherwise).
        """
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = artifact_location or default_artifact_location(tracking_uri)
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            self.experiment_id = found.experiment_id

    def parent_run(self, pipeline_id: str, config: dict[str, Any], kind: str = "pipeline") -> str:
        """The pipeline's run: found by tags, or created with the flattened config as params."""
        run_id = self._find({TAG_PIPELINE: pipeline_id, TAG_KIND: kind})
        if run_id is None:
            tags = {TAG_PIPELINE: pipeline_id, TAG_KIND: kind}
            run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=pipeline_id).info.run_id
        # Credentials (a tracking URI with a password, S3 keys) never reach MLflow. A re-run
        # may add stages: new keys are logged; MLflow params are immutable, so a changed value
        # keeps the first one, and the resolved config artifact always shows the latest run.
        params = flatten(redact(config))
        known = self.client.get_run(run_id).data.params
        self.log_params(run_id, {k: v for k, v in params.items() if k not in known})
        self.log_json(run_id, redact(config), "config/resolved_config.json")
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def child_run(self, parent_id: str, pipeline_id: str, stage: str, params: dict[str, Any]) -> str:
        """A stage's (or trial's) run under `parent_id`: found by tags, or created."""
        tags = {TAG_PIPELINE: pipeline_id, TAG_KIND: "stage", TAG_STAGE: stage, PARENT_TAG: parent_id}
        run_id = self._find(tags)
        if run_id is None:
            name = f"{pipeline_id}-{stage}"
            run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
            self.log_params(run_id, flatten(redact(params)))
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run FINISHED or FAILED (without MLflow's "View run at <URI>" print: the URI
        may carry credentials)."""
        with quiet_run_urls():
            self.client.set_terminated(run_id, status=status)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + _PARAMS_PER_BATCH])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        log_metrics(self.client, run_id, metrics, step)

    def log_json(self, run_id: str, obj: Any, artifact_file: str) -> None:
        """Write `obj` as JSON into the run's artifacts at `artifact_file`."""
        self.client.log_dict(run_id, obj, artifact_file)

    def log_file(self, run_id: str, path: str | Path, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_model(self, run_id: str, net: nn.Module, model: dict[str, Any], stage: dict[str, Any]) -> str:
        """Log `net` to run `run_id` as an exported model (`pipelines.checkpoint.export_model`:
        safetensors weights + the JSON settings that rebuild it; nothing pickled).

        Returns its URI, `runs:/<run_id>/model` (load it with `pipelines.tracking.load.load_model`).
        """
        with tempfile.TemporaryDirectory() as tmp:
            export_model(Path(tmp) / "model", net, model, stage)
            self.client.log_artifacts(run_id, str(Path(tmp) / "model"), MODEL_ARTIFACT)
        return f"runs:/{run_id}/{MODEL_ARTIFACT}"

    def register(self, name: str, model_uri: str, aliases: Sequence[str], tags: dict[str, Any]) -> str:
        """Register `model_uri` (`runs:/<run>/model`) as a new version of `name` (or reuse the
        version with the same stage and pipeline tags), set its tags and point each alias at it.
        Returns the version."""
        from mlflow.exceptions import MlflowException

        version = self._find_version(name, tags)
        if version is None:
            run_id, path = parse_runs_uri(model_uri)
            try:
                self.client.create_registered_model(name)
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            source = f"{self.client.get_run(run_id).info.artifact_uri}/{path}"
            version = self.client.create_model_version(name, source, run_id=run_id).version
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, str(value))
        for alias in aliases:
            self.client.set_registered_model_alias(name, alias, version)
        return str(version)

    def archive_pipeline(self, pipeline_id: str, suffix: str, registered_model: str) -> int:
        """Start a pipeline id afresh in MLflow: its runs (parent and stages) and its versions
        of `registered_model` are re-tagged `pag_pipeline_id=<pipeline_id>.<suffix>` (and
        `pag_restarted_as`), so they stay readable but are no longer found and continued.
        Returns how many runs and versions were re-tagged."""
        archived = f"{pipeline_id}.{suffix}"
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{TAG_PIPELINE}` = '{pipeline_id}'")
        for run in runs:
            self.client.set_tag(run.info.run_id, TAG_PIPELINE, archived)
            self.client.set_tag(run.info.run_id, TAG_ARCHIVED, archived)
        versions = 0
        if self.client.search_registered_models(f"name = '{registered_model}'"):
            for mv in self.client.search_model_versions(f"name = '{registered_model}'"):
                if mv.tags.get(TAG_PIPELINE) == pipeline_id:
                    self.client.set_model_version_tag(registered_model, mv.version, TAG_PIPELINE, archived)
                    self.client.set_model_version_tag(registered_model, mv.version, TAG_ARCHIVED, archived)
                    versions += 1
        return len(runs) + versions

    def _find(self, tags: dict[str, str]) -> Optional[str]:
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=" and ".join(clauses), order_by=["attributes.start_time ASC"]
        )
        return runs[0].info.run_id if runs else None

    def _find_version(self, name: str, tags: dict[str, Any]) -> Optional[str]:
        keys = (TAG_PIPELINE, TAG_STAGE)
        if not all(k in tags for k in keys):
            return None
        for mv in self.client.search_model_versions(f"name = '{name}'"):
            if all(mv.tags.get(k) == str(tags[k]) for k in keys):
                return mv.version
        return None


class RankZeroLogger:
    """Metric logging from inside Ray Train workers: world rank 0 logs, the others do nothing."""

    def __init__(
        self,
        tracking_uri: Optional[str],
        run_id: Optional[str],
        rank: int,
    ) -> None:
        """
        Args:
            tracking_uri: the pipeline's tracking URI (None disables logging, e.g. benchmarks).
            run_id: the stage's child run, from the driver or from the checkpoint.
            rank: this worker's world rank.
        """
        self.enabled = rank == 0 and tracking_uri is not None and run_id is not None
        self.run_id = run_id
        self.client = None
        if self.enabled:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=tracking_uri)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.enabled:
            log_metrics(self.client, self.run_id, metrics, step)


def log_metrics(client: Any, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log finite numeric metrics at `step` in batches (MLflow rejects NaN in some stores)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(k, float(v), now, int(step))
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and math.isfinite(float(v))
    ]
    for i in range(0, len(items), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[i : i + _METRICS_PER_BATCH])
