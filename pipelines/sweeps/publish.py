"""What a sweep leaves behind: the trial table, the front, its plot and registered models.

- `trial_points`: finished trials as `FrontPoint`s (cost = measured multiply-adds per image,
  score = tracking.front_metric); `curriculum_points`: the curriculum's finished rho stages.
- `publish`: on the sweep's parent run, `sweep/trials.csv` (every trial, failed ones with
  their error), then the front through `pipelines.tracking.publish.publish_front`:
  `front/front.csv` (every point, `on_front` marking the non-dominated set), `front/front.png`
  (`pipelines.sweeps.plot.plot_sweep`); each front point registered as a version of
  `<tracking.registered_model>-<sweep_id>`, tagged with its metrics and hyperparameters.
- `budget_aliases`: for each budget fraction of the dense model's multiply-adds, the best
  front point within it (`pipelines.tracking.front.champion`) gets the alias `flops-<fraction>`.
"""
from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from pipelines.atomic import atomic_path
from pipelines.config import PipelineConfig, SweepConfig, from_dict, load_config
from pipelines.sweeps.plot import plot_sweep
from pipelines.sweeps.space import COST, SCORE
from pipelines.tracking.front import FrontPoint, champion, pareto_front
from pipelines.tracking.publish import publish_front
from pipelines.tracking.tracker import Tracker
from pipelines.train.curriculum import stage_points
from pipelines.train.recorded import read_recorded
from pipelines.train.stages import read_record


@dataclass
class TrialRow:
    """One trial as the sweep saw it: its values, status and last reported stage."""

    trial_id: str
    status: str
    values: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class SweepResult:
    """What a finished (or resumed and finished) sweep produced."""

    trials: list[TrialRow]
    points: list[FrontPoint]
    front: list[FrontPoint]
    aliases: dict[str, str]
    versions: dict[str, str]
    registered_model: str
    tracking_uri: str
    parent_run_id: str


def curriculum_points(sweep: SweepConfig, pipeline: PipelineConfig) -> list[FrontPoint]:
    """The curriculum's finished points (`pipelines.train.curriculum.stage_points`: its PAG
    rho stages, the Table 2 baselines and the dense control, each with its kind and method)
    as front points named `curriculum-<stage>`; none without `sweep.curriculum`. The stages
    are those of the config the curriculum recorded when it ran, else of its YAML."""
    if not sweep.curriculum:
        return []
    staged = load_config(sweep.curriculum)
    recorded = read_recorded(staged)  # what ran: e.g. the demo repeats its comparison per seed
    if recorded is not None:
        staged = from_dict(recorded)
    metric = pipeline.tracking.front_metric
    records = [r for r in (read_record(staged, s) for s in staged.stages) if r is not None and metric in r.metrics]
    points = []
    for p in stage_points(replace(staged, tracking=replace(staged.tracking, front_metric=metric)), records):
        extra = {**p.extra, "source": "curriculum", "lam": next(s.lam for s in staged.stages if s.name == p.name)}
        points.append(FrontPoint(f"curriculum-{p.name}", p.cost, p.score, extra))
    return points


def registrable(points: Sequence[FrontPoint]) -> list[FrontPoint]:
    """The PAG points (trials and the curriculum's rho stages): baselines and the dense
    control are drawn and listed for comparison, never registered."""
    return [p for p in points if p.extra.get("kind") not in ("baseline", "control")]


def budget_alias(fraction: float) -> str:
    """0.7 -> "flops-0_7" (registry aliases allow letters, digits, _ and - only)."""
    return f"flops-{fraction:g}".replace(".", "_")


def budget_aliases(points: Sequence[FrontPoint], budgets: Sequence[float]) -> dict[str, str]:
    """alias -> point name: for each budget fraction of the largest dense multiply-adds, the
    best front point within it (`pipelines.tracking.front.champion`); budgets nothing fits get none."""
    if not points:
        return {}
    dense = max(p.extra["dense_macs"] for p in points)
    out = {}
    for fraction in budgets:
        best = champion(points, fraction * dense)
        if best is not None:
            out[budget_alias(fraction)] = best.name
    return out


def trial_points(trials: Sequence[TrialRow]) -> list[FrontPoint]:
    points = []
    for row in trials:
        if row.status != "done":
            continue
        m = row.metrics
        extra = {
            "source": "trial",
            "rho": m["rho"],
            "lam": row.values.get("lam", ""),
            "model_uri": m["model_uri"],
            "macs_ratio": m["macs_ratio"],
            "time_ratio": m.get("eval/time_ratio"),
            "dense_macs": m["dense_macs"],
            "stage": m["stage"],
            "run_id": m["run_id"],
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in row.values.items() if k not in ("lam", "rho")},
        }
        points.append(FrontPoint(row.trial_id, m[COST], m[SCORE], extra))
    return points


def publish(
    pipeline: PipelineConfig,
    sweep: SweepConfig,
    tracker: Tracker,
    parent: str,
    trials: Sequence[TrialRow],
    points: Sequence[FrontPoint],
) -> SweepResult:
    """Trial table, front CSV and plot on the parent run; the front's models registered."""
    metric = pipeline.tracking.front_metric
    name = f"{pipeline.tracking.registered_model}-{sweep.sweep_id}"
    front = pareto_front(registrable(points))
    with tempfile.TemporaryDirectory() as tmp:
        tracker.log_file(parent, write_trials_csv(trials, Path(tmp) / "trials.csv"), "sweep")
    failed = [t.trial_id for t in trials if t.status == "error"]
    tracker.client.set_tag(parent, "failed_trials", ",".join(failed) or "none")
    tracker.log_metrics(parent, {"trials_done": sum(t.status == "done" for t in trials), "trials_failed": len(failed)}, 0)
    aliases = budget_aliases(registrable(points), sweep.budgets)
    aliases_of: dict[str, list[str]] = {p.name: [] for p in front}
    for alias, point_name in aliases.items():
        aliases_of[point_name].append(alias)
    versions = {}
    if points:
        versions = publish_front(tracker, parent, points, metric, plot_sweep, name, sweep.sweep_id, front, aliases_of)
    return SweepResult(list(trials), list(points), front, aliases, versions, name, tracker.tracking_uri, parent)


def write_trials_csv(trials: Sequence[TrialRow], path: str | Path) -> Path:
    """Every trial: id, status, searched values, score, macs, ratios, stage, run, error (atomic)."""
    path = Path(path)
    keys = sorted({k for t in trials for k in t.values})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trial_id", "status", *keys, SCORE, COST, "macs_ratio", "dense_macs", "stage", "run_id", "error"])
        for t in sorted(trials, key=lambda t: t.trial_id):
            m = t.metrics
            row = [t.trial_id, t.status]
            row += ["+".join(v) if isinstance(v := t.values.get(k, ""), tuple) else v for k in keys]
            row += [m.get(k, "") for k in (SCORE, COST, "macs_ratio", "dense_macs", "stage", "run_id")]
            writer.writerow(row + [t.error.strip().splitlines()[-1] if t.error else ""])
    return path


def summary_table(result: SweepResult) -> str:
    """Plain-text table: every trial and curriculum point with its method, rho, lambda,
    GMACs and their ratio to dense, the measured time ratio, the score."""
    on_front = {p.name for p in result.front}
    by_name = {v: k for k, v in result.aliases.items()}
    lines = [
        f"{'trial':<28}{'method':>12}{'rho':>7}{'lambda':>10}{'GMACs/img':>11}{'MACs':>6}{'time':>6}{'score':>8}  front"
    ]
    for p in sorted(result.points, key=lambda p: p.cost):
        mark = "*" if p.name in on_front else ""
        alias = " " + ",".join(a for a, n in result.aliases.items() if n == p.name) if p.name in by_name else ""
        lam = p.extra.get("lam", "")
        lam = f"{lam:.1e}" if isinstance(lam, float) else str(lam)
        rho = p.extra.get("rho")
        time = p.extra.get("time_ratio")
        lines.append(
            f"{p.name:<28}{p.extra.get('method', 'pag'):>12}{'-' if rho is None else f'{rho:.3f}':>7}{lam:>10}"
            f"{p.cost / 1e9:>11.4f}{p.extra.get('macs_ratio', 1):>6.2f}{'-' if time is None else f'{time:.2f}':>6}"
            f"{p.score:>8.3f}  {mark}{alias}"
        )
    for t in result.trials:
        if t.status != "done":
            lines.append(f"{t.trial_id:<28}{t.status:>12}  {t.error.strip().splitlines()[-1][:80] if t.error else ''}")
    return "\n".join(lines)
