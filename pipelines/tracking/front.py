"""The Pareto front of (computation, accuracy) points, its CSV and its plot (drawn by
`pipelines.pictures.front_figure`).

Every rho stage of the curriculum (and every sweep trial) is a point: multiply-adds spent
(lower is better) and a task metric (higher is better). A point is on the front when no other
point is at least as good on both axes and strictly better on one. Consequences, all tested:
exact duplicates do not dominate each other, so both stay; a point with equal cost and a
lower score is dominated; a single point is its own front; the front is never empty.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from pipelines.atomic import atomic_path
from pipelines.pictures import front_figure, save_figure  # noqa: F401  (save_figure: re-exported)


@dataclass(frozen=True)
class FrontPoint:
    """One trained model seen as a cost/score pair.

    Args:
        name: stage or trial name.
        cost: multiply-adds per image (lower is better).
        score: the ranking metric (higher is better).
        extra: further columns written to the CSV (rho, other metrics, model URI).
    """

    name: str
    cost: float
    score: float
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def dominates(a: FrontPoint, b: FrontPoint) -> bool:
    """True if `a` is no worse than `b` on both axes and strictly better on one."""
    no_worse = a.cost <= b.cost and a.score >= b.score
    better = a.cost < b.cost or a.score > b.score
    return no_worse and better


def pareto_front(points: Sequence[FrontPoint]) -> list[FrontPoint]:
    """The non-dominated points, sorted by cost (then by name for equal costs).

    Raises:
        ValueError: on a NaN cost or score (it cannot be ranked), naming the point.
    """
    for p in points:
        if math.isnan(p.cost) or math.isnan(p.score):
            raise ValueError(f"front point {p.name!r} has cost={p.cost}, score={p.score}: NaN")
    # O(n^2): fronts here have tens of points at most.
    keep = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(keep, key=lambda p: (p.cost, -p.score, p.name))


def champion(points: Sequence[FrontPoint], max_cost: float) -> Optional[FrontPoint]:
    """The best-scoring front point whose cost is within `max_cost`; None if none fits.

    Among equal scores the cheaper one wins, then the first name alphabetically.
    """
    fits = [p for p in pareto_front(points) if p.cost <= max_cost]
    if not fits:
        return None
    return min(fits, key=lambda p: (-p.score, p.cost, p.name))


def write_front_csv(
    points: Sequence[FrontPoint],
    path: str | Path,
) -> Path:
    """All points with an `on_front` column, sorted by cost, written atomically."""
    path = Path(path)
    front = {id(p) for p in pareto_front(points)}
    extra_keys = sorted({k for p in points for k in p.extra})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "cost", "score", "on_front", *extra_keys])
        for p in sorted(points, key=lambda p: (p.cost, -p.score, p.name)):
            row = [p.name, p.cost, p.score, id(p) in front]
            writer.writerow(row + [p.extra.get(k, "") for k in extra_keys])
    return path


def plot_front(
    points: Sequence[FrontPoint],
    path: str | Path,
    score_label: str = "score",
    cost_label: str = "multiply-adds per image",
) -> Path:
    """`pipelines.pictures.front_figure` of the points (score against % multiply-adds saved;
    against raw cost, labelled `cost_label`, when a point has no macs ratio), saved as PNG
    atomically at `path`."""
    front_figure(points, score_label, path, cost_label=cost_label)
    return Path(path)
