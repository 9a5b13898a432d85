"""The resolved config a pipeline id was started with, and the check that a re-run matches it.

`<storage_path>/<pipeline_id>/config.json` holds the (redacted) resolved config of the first
run of a pipeline id, beside its stage records. Re-running the same id continues that
pipeline (finished stages are skipped, an unfinished one resumes), so a re-run whose config
differs would silently mix two experiments under one MLflow parent run. `check_recorded`
compares the new config with the record before Ray starts and raises `ConfigMismatch`
naming every differing key (`stages.base.lr: recorded 0.01, now 0.02`).

Allowed differences:

- stages appended after the recorded ones (the recorded ones unchanged, in the same order):
  the curriculum goes on, and the record is extended;
- `RUN_ONLY_KEYS`, settings that change how a run is carried out, not what it trains:
  how often it logs and checkpoints, how many restarts it may use, the CPUs and GPUs each
  worker reserves. The record (and the parent run's params) keep their first values.

Everything else is strict, including `tracking.*` (the stage records hold run ids of the
recorded MLflow store) and `scaling.num_workers` (it sets the global batch). To change such
a key, start afresh: `pipelines/staged.py --restart` (archives this id's records, see
`archive`) or a new id (`--set pipeline_id=<new>`).

A pipeline started before this record existed has stage records but no `config.json`: its
first re-run records the config it is given (nothing to compare against).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from pipelines.config import ConfigError, PipelineConfig, flatten
from pipelines.datasets import storage
from pipelines.tracking.redaction import redact
from pipelines.train.stages import pipeline_root

CONFIG_RECORD = "config.json"
RUN_ONLY_KEYS = frozenset({
    "train.log_every",
    "train.checkpoint_every",
    "train.max_failures",
    "scaling.cpus_per_worker",
    "scaling.gpus_per_worker",
})
_MISSING = object()


class ConfigMismatch(ConfigError):
    """A re-run of a pipeline id whose config differs from the recorded one."""


def record_uri(config: PipelineConfig) -> str:
    return storage.join(pipeline_root(config), CONFIG_RECORD)


def read_recorded(config: PipelineConfig) -> Optional[dict[str, Any]]:
    """The recorded config of `config.pipeline_id`, or None when there is none yet."""
    uri = record_uri(config)
    if not storage.exists(uri):
        return None
    try:
        return json.loads(storage.read_bytes(uri))
    except ValueError as err:
        raise ConfigError(f"{uri}: unreadable config record ({err}); restart the pipeline (--restart)") from err


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: recorded X, now Y` for every key that differs beyond the allowed differences."""
    old_stages = [s["name"] for s in recorded.get("stages", [])]
    new_stages = [s["name"] for s in current.get("stages", [])]
    out = []
    reordered = new_stages[: len(old_stages)] != old_stages
    if reordered:
        out.append(f"stages: recorded {old_stages}, now {new_stages} (only appending stages is allowed)")
    appended = {f"stages.{name}." for name in new_stages[len(old_stages):]}
    old, new = flatten(recorded), flatten(current)
    for key in sorted(set(old) | set(new)):
        if key in RUN_ONLY_KEYS or any(key.startswith(p) for p in appended):
            continue
        if reordered and key.startswith("stages."):
            continue  # the stage lists already differ; one line says how
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a != b:
            out.append(f"{key}: recorded {_show(a)}, now {_show(b)}")
    return out


def check_recorded(config: PipelineConfig) -> None:
    """ConfigMismatch when `config` differs from the config recorded for its pipeline id.

    Raises:
        ConfigMismatch naming the record, every differing key and how to start afresh.
    """
    recorded = read_recorded(config)
    if recorded is None:
        return
    diff = differences(recorded, _resolved(config))
    if diff:
        raise ConfigMismatch(
            f"pipeline_id={config.pipeline_id!r} was started with another config ({record_uri(config)}); "
            f"differing: {'; '.join(diff)}. Re-run with the recorded values to continue it, or start "
            f"afresh: add --restart (archives this id's records and runs) or use --set pipeline_id=<new id>"
        )


def write_recorded(config: PipelineConfig) -> str:
    """Record `config` for its pipeline id (after `check_recorded`): the first run's config,
    extended by appended stages; run-only keys keep their recorded values."""
    current = _resolved(config)
    recorded = read_recorded(config)
    if recorded is not None:
        kept = flatten(recorded)
        current = _with_values(current, {k: kept[k] for k in RUN_ONLY_KEYS if k in kept})
    uri = record_uri(config)
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(uri, json.dumps(current, indent=2, sort_keys=True).encode())
    return uri


def archive(config: PipelineConfig, now: Optional[datetime] = None) -> tuple[str, str]:
    """Move `<storage>/<pipeline_id>` (stage records, checkpoints, config record) aside to
    `<storage>/<pipeline_id>.restarted-<UTC time>`; returns (archive suffix, archive path).

    The suffix holds a dot, which pipeline ids cannot, so no pipeline id ever names an archive.

    Raises:
        ConfigError for a remote storage path (moving an S3 prefix is a copy of every object:
        use a new pipeline id there).
    """
    root = pipeline_root(config)
    if "://" in root:
        raise ConfigError(
            f"--restart: storage_path={config.storage_path!r} is remote; start afresh with "
            "--set pipeline_id=<new id> instead"
        )
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    suffix = f"restarted-{stamp}"
    target = Path(f"{root}.{suffix}")
    if Path(root).exists():
        Path(root).rename(target)
    return suffix, str(target)


def _resolved(config: PipelineConfig) -> dict[str, Any]:
    """What is recorded: the plain config with credentials masked (no secret on disk)."""
    return redact(config.to_dict())


def _with_values(tree: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(tree))
    for key, value in values.items():
        section, _, name = key.partition(".")
        out[section][name] = value
    return out


def _show(value: Any) -> str:
    return "(absent)" if value is _MISSING else json.dumps(value)
