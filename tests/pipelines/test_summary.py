"""The demo's summary: rows per point, the claims it checks (by hand-made rows), the table."""
from __future__ import annotations

import pytest

from pipelines.config import StageConfig
from pipelines.tracking.front import FrontPoint
from pipelines.train.summary import check_claims, evaluated_density, summary_points, summary_table

METRIC = "semantic/miou"


def _row(name, seed, kind, method, rho, macs, miou, ponder=None, density=None, time=None):
    return {"name": name, "seed": seed, "kind": kind, "method": method, "rho": rho, "macs_ratio": macs,
            "time_ratio": time, "ponder_boundary_ratio": ponder, "density": density, "metrics": {METRIC: miou}}


def test_evaluated_density_is_the_mean_over_gated_layers():
    assert evaluated_density({"density/a": 0.2, "density/b": 0.6, "macs": 5.0}) == pytest.approx(0.4)
    assert evaluated_density({"macs": 5.0}) is None


def test_summary_points_carry_kind_method_and_every_metric():
    p = FrontPoint("pag", 7.0, 0.5, {"kind": "pag", "method": "pag", "rho": 0.5})
    metrics = {"pag": {"macs_ratio": 0.6, "time_ratio": 0.8, "ponder/boundary_ratio": 1.5, "density/x": 0.45, METRIC: 0.5}}
    (row,) = summary_points([p], metrics, {"pag": StageConfig("pag", 1)}, seed=2)
    assert row["seed"] == 2 and row["name"] == "pag" and row["kind"] == "pag" and row["method"] == "pag" and row["rho"] == 0.5
    assert (row["macs_ratio"], row["time_ratio"], row["ponder_boundary_ratio"], row["density"]) == (0.6, 0.8, 1.5, 0.45)
    assert row["metrics"] == metrics["pag"]


def test_claims_are_checked_per_seed_against_their_targets():
    rows = [
        _row("pag", 0, "pag", "pag", 0.5, 0.66, 0.70, ponder=1.4, density=0.53),
        _row("trunc", 0, "baseline", "truncated", None, 0.65, 0.69),
        _row("skip", 0, "baseline", "layer_skip", 0.5, 0.70, 0.71),
        _row("ctrl", 0, "control", "dense", None, 1.0, 0.75),
        _row("pag", 1, "pag", "pag", 0.5, 0.72, 0.70, ponder=1.1, density=0.56),
    ]
    checks = {(c["seed"], c["claim"].split(" (")[0]): c for c in check_claims(rows, METRIC)}
    assert checks[(0, "pag MACs ratio <= 0.7")]["ok"]
    assert not checks[(1, "pag MACs ratio <= 0.7")]["ok"]
    assert checks[(0, "pag ponder ratio >= 1.2")]["ok"] and not checks[(1, "pag ponder ratio >= 1.2")]["ok"]
    gap0, gap1 = checks[(0, "pag density - rho within 0.05")], checks[(1, "pag density - rho within 0.05")]
    assert gap0["value"] == pytest.approx(0.03) and gap0["ok"]
    assert gap1["value"] == pytest.approx(0.06) and not gap1["ok"]
    assert checks[(0, "pag semantic/miou - trunc")]["value"] == pytest.approx(0.01)
    assert checks[(0, "pag semantic/miou - trunc")]["ok"]
    assert not checks[(0, "pag semantic/miou - skip")]["ok"]
    assert not any("ctrl" in claim for _, claim in checks)  # the control is read, not beaten


def test_table_gives_mean_and_range_over_seeds():
    rows = [_row("pag", s, "pag", "pag", 0.5, m, 0.7, ponder=1.5, density=0.5) for s, m in ((0, 0.6), (1, 0.7), (2, 0.8))]
    table = summary_table(rows, METRIC)
    line = table.splitlines()[1]
    assert line.startswith("pag") and "0.70 [0.60..0.80]" in line and "0.700 [0.700..0.700]" in line


def test_repeated_stages_are_named_by_their_own_name_and_seed():
    p = FrontPoint("pag-s1", 7.0, 0.5, {"kind": "pag", "method": "pag", "rho": 0.5})
    (row,) = summary_points([p], {"pag-s1": {"macs_ratio": 0.6}}, {"pag-s1": StageConfig("pag-s1", 1, seed=1)}, seed=0)
    assert (row["name"], row["stage"], row["seed"]) == ("pag", "pag-s1", 1)
