"""Where a sweep's trials start: a checkpoint, a registered model or a curriculum stage.

The paper fine-tunes the sparsity stages from a trained base/MultiPool model; a sweep does
the same for every trial. `sweep.base` names that model in one of three forms, all turned
into a checkpoint directory the training loop reads (`state.pt` with a `model` state dict):

- a checkpoint directory written by the training loop (local path or s3://), used as is;
- `curriculum:STAGE`: the final checkpoint of that stage of `sweep.curriculum`, which must
  have finished (its "stage done" record exists);
- `models:/NAME@ALIAS` or `models:/NAME/VERSION`: the registered PAGNet is loaded through
  MLflow once, on the driver, and its weights written as a checkpoint under the sweep's
  storage (`<storage>/<sweep_id>/base/`), atomically, so every trial reads the same file.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pipelines.checkpoint import STATE_FILE, save_state
from pipelines.config import ConfigError, PipelineConfig, SweepConfig, load_config
from pipelines.datasets import storage
from pipelines.tracking.load import load_model
from pipelines.tracking.redaction import redact_text
from pipelines.train.stages import read_record


def resolve_base(
    sweep: SweepConfig,
    pipeline: PipelineConfig,
    tracking_uri: str,
    target: str,
) -> str:
    """The URI of the checkpoint directory every trial starts from.

    Args:
        sweep: the sweep settings (`base`, `curriculum`).
        pipeline: the trials' pipeline config (model settings for a registered model).
        tracking_uri: MLflow URI to load a `models:/` base from.
        target: where a registered model's weights are written (`<sweep root>/base`).

    Raises:
        ConfigError: naming `sweep.base` and what is missing.
    """
    base = sweep.base
    if base.startswith("curriculum:"):
        return _curriculum_checkpoint(sweep, base.split(":", 1)[1])
    if base.startswith("models:/"):
        return _registered_checkpoint(base, pipeline, tracking_uri, target)
    uri = base if "://" in base else str(Path(base).resolve())
    if not storage.exists(storage.join(uri, STATE_FILE)):
        raise ConfigError(
            f"sweep.base={base!r}: no {STATE_FILE} there; expected a checkpoint directory of the "
            "training loop, models:/NAME@ALIAS or curriculum:STAGE"
        )
    return uri


def _curriculum_checkpoint(sweep: SweepConfig, stage_name: str) -> str:
    staged = load_config(sweep.curriculum)
    names = [s.name for s in staged.stages]
    if stage_name not in names:
        raise ConfigError(f"sweep.base=curriculum:{stage_name}: {sweep.curriculum} has no stage {stage_name!r} ({names})")
    record = read_record(staged, staged.stages[names.index(stage_name)])
    if record is None:
        raise ConfigError(
            f"sweep.base=curriculum:{stage_name}: that stage of {sweep.curriculum} has not finished; "
            f"run `python pipelines/staged.py --config {sweep.curriculum}` first"
        )
    return record.checkpoint


def _registered_checkpoint(uri: str, pipeline: PipelineConfig, tracking_uri: str, target: str) -> str:
    """Load `uri` through MLflow and write its weights as a checkpoint at `target` (once)."""
    if storage.exists(storage.join(target, STATE_FILE)):
        return target
    try:
        net = load_model(uri, tracking_uri)
    except Exception as err:  # MlflowException for a missing name/alias/version
        raise ConfigError(
            f"sweep.base={uri!r}: cannot load it from {redact_text(tracking_uri)}: {redact_text(str(err))}"
        ) from None
    state = {
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "model_config": pipeline.to_dict()["model"],
        "stage": {"name": "base", "source": uri, "multipool": pipeline.stages[0].multipool, "gated": []},
        "iteration": 0,
    }
    with tempfile.TemporaryDirectory() as tmp:
        save_state(tmp, state)
        if storage.is_s3(target):
            storage.put_file(str(Path(tmp) / STATE_FILE), storage.join(target, STATE_FILE))
            return target
        final = Path(target)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".base-", dir=final.parent))
        shutil.copy2(Path(tmp) / STATE_FILE, staging / STATE_FILE)
        try:
            os.replace(staging, final)  # atomic: a trial never sees a half-written base
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another driver got there first
    return str(final)


__all__ = ["resolve_base"]
