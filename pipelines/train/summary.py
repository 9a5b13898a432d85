"""What a demo (or any set of seeded pipeline runs) showed: its points, checks and table.

`summary_points` turns one finished pipeline into plain rows (the stages that are points of
the front: PAG, the baselines, the dense control; `curriculum.point_kind`), `check_claims`
tests the claims the demo makes over all seeds (PAG's cost and ponder ratio, rho's control of
the evaluated density, PAG against each baseline at the same budget), and `summary_table`
prints the rows. `summary.json` is `{"minutes", "seeds", "points", "checks"}`.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Optional, Sequence

from pipelines.config.repeat import unseeded
from pipelines.tracking.front import FrontPoint

PONDER_MIN = 1.2  # mean ponder within 8 px of a label change / elsewhere, for PAG
DENSITY_GAP = 0.05  # |evaluated density - rho| allowed for PAG


def evaluated_density(metrics: dict[str, float]) -> Optional[float]:
    """Mean evaluated density over the gated layers (`density/<layer>`), None without gates."""
    values = [v for k, v in metrics.items() if k.startswith("density/")]
    return sum(values) / len(values) if values else None


def summary_points(points: Sequence[FrontPoint], metrics: dict[str, dict[str, float]], stages: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One row per point of a finished pipeline (`curriculum.stage_points`), with every
    evaluation metric of its stage (`metrics[stage]`). A stage repeated over seeds
    (`pipelines.config.repeat`) is named by its own name, with its seed; others get `seed`.

    Args:
        points: the pipeline's points.
        metrics: stage name -> its evaluation metrics.
        stages: stage name -> StageConfig.
        seed: the seed of stages that were not repeated (train.seed).
    """
    rows = []
    for p in points:
        m = metrics[p.name]
        name, own_seed = unseeded(stages[p.name])
        rows.append({
            "name": name,
            "stage": p.name,
            "seed": seed if own_seed is None else own_seed,
            "kind": p.extra["kind"],
            "method": p.extra["method"],
            "rho": p.extra.get("rho"),
            "macs_ratio": m.get("macs_ratio"),
            "time_ratio": m.get("time_ratio"),
            "ponder_boundary_ratio": m.get("ponder/boundary_ratio"),
            "density": evaluated_density(m),
            "metrics": dict(m),
        })
    return rows


def check_claims(rows: Sequence[dict[str, Any]], metric: str, max_macs: float = 0.70) -> list[dict[str, Any]]:
    """The demo's claims, per seed: each a dict {claim, seed, value, target, ok}.

    - every PAG point spends <= `max_macs` of dense multiply-adds (only checked at rho <= 0.5);
    - its ponder ratio near label changes / elsewhere is >= PONDER_MIN;
    - its evaluated density is within DENSITY_GAP of its rho;
    - the PAG point with the lowest rho is at least as accurate (`metric`) as each baseline.
    """
    checks = []
    for seed in sorted({r["seed"] for r in rows}):
        own = [r for r in rows if r["seed"] == seed]
        pag = [r for r in own if r["kind"] == "pag"]
        for r in pag:
            if r["rho"] is not None and r["rho"] <= 0.5:
                checks.append(_check(f"{r['name']} MACs ratio <= {max_macs}", seed, r["macs_ratio"], max_macs, r["macs_ratio"] <= max_macs))
            ponder = r["ponder_boundary_ratio"]
            checks.append(_check(f"{r['name']} ponder ratio >= {PONDER_MIN}", seed, ponder, PONDER_MIN, ponder is not None and ponder >= PONDER_MIN))
            gap = None if r["density"] is None or r["rho"] is None else r["density"] - r["rho"]
            checks.append(_check(f"{r['name']} density - rho within {DENSITY_GAP}", seed, gap, DENSITY_GAP, gap is not None and abs(gap) <= DENSITY_GAP))
        if not pag:
            continue
        lead = min(pag, key=lambda r: r["rho"] if r["rho"] is not None else 1.0)
        for b in (r for r in own if r["kind"] == "baseline"):
            diff = lead["metrics"][metric] - b["metrics"][metric]
            checks.append(_check(f"{lead['name']} {metric} - {b['name']} (MACs {lead['macs_ratio']:.2f} vs {b['macs_ratio']:.2f})", seed, diff, 0.0, diff >= 0.0))
    return checks


def _check(claim: str, seed: int, value: Optional[float], target: float, ok: bool) -> dict[str, Any]:
    return {"claim": claim, "seed": seed, "value": value, "target": target, "ok": bool(ok)}


def summary_table(rows: Sequence[dict[str, Any]], metric: str) -> str:
    """Per point name: mean [min..max] over seeds of MACs ratio, time ratio, `metric`,
    ponder ratio and evaluated density."""
    names = list(dict.fromkeys(r["name"] for r in rows))
    short = metric.split("/")[-1]
    widths = (17, 17, 20, 17, 17)
    heads = ("MACs", "time", short, "ponder", "density")
    lines = [f"{'point':<16}{'method':<12}{'rho':>5}  " + "".join(f"{h:<{w}}" for h, w in zip(heads, widths))]
    for name in names:
        own = [r for r in rows if r["name"] == name]
        first = own[0]
        rho = "-" if first["rho"] is None else f"{first['rho']:g}"
        cells = [
            _spread([r["macs_ratio"] for r in own], 2),
            _spread([r["time_ratio"] for r in own], 2),
            _spread([r["metrics"].get(metric) for r in own], 3),
            _spread([r["ponder_boundary_ratio"] for r in own], 2),
            _spread([r["density"] for r in own], 2),
        ]
        lines.append(f"{name:<16}{first['method']:<12}{rho:>5}  " + "".join(f"{c:<{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def _spread(values: Sequence[Optional[float]], digits: int) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.fmean(vals):.{digits}f} [{min(vals):.{digits}f}..{max(vals):.{digits}f}]"
