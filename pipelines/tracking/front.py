"""The Pareto front of (computation, accuracy) points, its CSV and its plot.

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
    """Scatter of all points with the front as a step line, saved as PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.scatter([p.cost for p in points], [p.score for p in points], c="0.6", label="all")
    ax.step([p.cost for p in front], [p.score for p in front], where="post", c="C0")
    ax.scatter([p.cost for p in front], [p.score for p in front], c="C0", label="front")
    for p in points:
        ax.annotate(p.name, (p.cost, p.score), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(cost_label)
    ax.set_ylabel(score_label)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure to `path` atomically (temp name, then rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return path
