"""The sweep's accuracy-vs-computation plot, labelled like the paper's figures.

Every finished trial is a grey dot, curriculum stages are squares, the non-dominated set
(`pipelines.tracking.front.pareto_front`) is drawn in colour with a step line, and each point carries
the paper-style label `rho=0.5, lambda=1e-3`. The x axis is GMACs per image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from pipelines.tracking.front import FrontPoint, pareto_front, save_figure


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
    """Scatter of all points, the front highlighted, saved as PNG atomically at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    front = pareto_front(points)
    on_front = {id(p) for p in front}
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for source, marker in (("trial", "o"), ("curriculum", "s")):
        group = [p for p in points if p.extra.get("source", "trial") == source]
        if group:
            ax.scatter([p.cost / 1e9 for p in group], [p.score for p in group], c="0.65", marker=marker,
                       label=f"{source}s")
    ax.step([p.cost / 1e9 for p in front], [p.score for p in front], where="post", c="C3", lw=1.2)
    ax.scatter([p.cost / 1e9 for p in front], [p.score for p in front], facecolors="none", edgecolors="C3",
               s=90, lw=1.5, label="Pareto front")
    for p in points:
        ax.annotate(point_label(p), (p.cost / 1e9, p.score), fontsize=7, xytext=(4, 3), textcoords="offset points",
                    color="C3" if id(p) in on_front else "0.35")
    ax.set_xlabel("GMACs per image (measured)")
    ax.set_ylabel(score_label)
    ax.set_title("accuracy vs computation")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)
