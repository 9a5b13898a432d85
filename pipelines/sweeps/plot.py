"""The sweep's accuracy-vs-computation plot, drawn like the paper's Fig. 5 by
`pipelines.pictures.front_figure`.

Every finished trial is a grey dot, ringed and labelled `ρ=0.5, λ=1e-03` when it is in the
non-dominated set (`pipelines.tracking.front.pareto_front`); the curriculum's rho stages are
the PAG line; baselines and the dense control (points whose `extra["kind"]` says so) keep
their own markers. The x axis is % multiply-adds saved (from each point's macs_ratio).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pipelines.pictures import front_figure
from pipelines.tracking.front import FrontPoint, pareto_front


def point_label(point: FrontPoint) -> str:
    """`ρ=0.5, λ=1e-03` from the point's extras (lambda left out when unknown)."""
    rho = point.extra.get("rho")
    lam = point.extra.get("lam")
    parts = [f"ρ={rho:.2g}" if isinstance(rho, (int, float)) else point.name]
    if isinstance(lam, (int, float)):
        parts.append(f"λ={lam:.0e}")
    return ", ".join(parts)


def plot_sweep(
    points: Sequence[FrontPoint],
    path: str | Path,
    score_label: str,
) -> Path:
    """`pipelines.pictures.front_figure` of trials and curriculum stages, saved as PNG atomically."""
    front = {id(p) for p in pareto_front(points)}
    front_figure([as_drawn(p, id(p) in front) for p in points], score_label, path)
    return Path(path)


def as_drawn(point: FrontPoint, on_front: bool) -> FrontPoint:
    """`point` with the extras `front_figure` reads: kind ("trial" for sweep trials, "pag" for
    curriculum stages, unless the point has a kind already), on_front and its label."""
    kind = point.extra.get("kind") or ("pag" if point.extra.get("source") == "curriculum" else "trial")
    extra = {**point.extra, "kind": kind, "on_front": on_front, "label": point_label(point)}
    return FrontPoint(point.name, point.cost, point.score, extra)
