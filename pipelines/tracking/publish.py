"""The one front publisher: front CSV and plot on a parent run, front models in the registry.

The curriculum (its rho stages) and the sweep (its finished trials, beside the curriculum's
points) publish the same way:

- `front/front.csv`: every point with an `on_front` column (`write_front_csv`);
- `front/front.png`: the caller's plot of the points (the curriculum's `plot_front`, the
  sweep's `plot_sweep`);
- each point in `register` as a version of `registered_model`, tagged with the pipeline (or
  sweep) id, the point's name, its multiply-adds, FLOPs, score and its extra fields, and given
  the aliases the caller chose for it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

from pipelines.tracking.front import FrontPoint, write_front_csv
from pipelines.tracking.tracker import TAG_PIPELINE, TAG_STAGE, Tracker

Plot = Callable[[Sequence[FrontPoint], Path, str], Path]


def publish_front(
    tracker: Tracker,
    run_id: str,
    points: Sequence[FrontPoint],
    metric: str,
    plot: Plot,
    registered_model: str,
    pipeline_id: str,
    register: Sequence[FrontPoint],
    aliases_of: Mapping[str, Sequence[str]],
) -> dict[str, str]:
    """Log the front's CSV and plot on `run_id`; register `register`; return name -> version.

    Args:
        tracker: the MLflow tracker.
        run_id: the parent run of the pipeline or sweep.
        points: every point (cost = multiply-adds per image, score = `metric`).
        metric: the score's name, e.g. "semantic/miou" (axis label and registry tag).
        plot: writes the points' figure to the given path, labelled with `metric`.
        registered_model: the registered model's name.
        pipeline_id: the pipeline or sweep id, tagged on every version.
        register: the points whose models are registered (each has `extra["model_uri"]`).
        aliases_of: point name -> registry aliases for its version.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_file(run_id, write_front_csv(points, Path(tmp) / "front.csv"), "front")
        tracker.log_file(run_id, plot(points, Path(tmp) / "front.png", metric), "front")
    versions = {}
    for p in register:
        tags = {
            TAG_PIPELINE: pipeline_id,
            TAG_STAGE: p.name,
            "macs": p.cost,
            "flops": 2 * p.cost,
            metric: p.score,
            **{k: v for k, v in p.extra.items() if k != "model_uri"},
        }
        versions[p.name] = tracker.register(registered_model, p.extra["model_uri"], list(aliases_of.get(p.name, ())), tags)
    return versions
