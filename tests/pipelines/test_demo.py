"""The README's demo as a user runs it (`python -m pipelines.demo`), shrunk to seconds: a base,
then two seeds of PAG with density calibration, the dense control and matched truncation on a
few generated scenes. Checks what the demo promises to write: the summary JSON with every
seed's points (kind, method, ratios, metrics), the claims recomputed from those points, the
printed table, the front figure, and the MLflow runs (one pipeline, a run per stage)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.support.staged_data import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

STAGES = (
    "[{name: base, kind: dense, iterations: 2, lr: 0.002},"
    " {name: pag-rho-0_5, init: base, iterations: 2, lr: 0.001, gated: [res3, res4, res5], rho: 0.5, lam: 0.003, calibrate: true},"
    " {name: dense-control, kind: dense, init: base, iterations: 2, lr: 0.001},"
    " {name: truncated, kind: truncated, init: base, iterations: 2, lr: 0.001, gated: [res3, res4, res5], match: pag-rho-0_5}]"
)


def test_demo_writes_its_summary_over_seeds(tmp_path):
    out = tmp_path / "demo_out"
    cmd = [sys.executable, "-m", "pipelines.demo", "--out", str(out), "--seeds", "2", "--scenes", "6", "3",
           "--set", "data.eval_images=3", "--set", "train.batch_size=2", "--set", "train.checkpoint_every=2",
           "--set", "scaling.num_workers=1", "--set", "scaling.cpus_per_worker=1", "--set", f"stages={STAGES}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=800)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 2 and summary["minutes"] > 0 and summary["metric"] == "semantic/miou"
    points = {(p["seed"], p["name"]): p for p in summary["points"]}
    assert set(points) == {(s, n) for s in (0, 1) for n in ("pag-rho-0_5", "dense-control", "truncated")}
    for seed in (0, 1):
        pag, control, trunc = (points[(seed, n)] for n in ("pag-rho-0_5", "dense-control", "truncated"))
        assert (pag["kind"], pag["method"], pag["rho"]) == ("pag", "pag", 0.5)
        assert (control["kind"], control["method"]) == ("control", "dense")
        assert (trunc["kind"], trunc["method"]) == ("baseline", "truncated")
        assert control["macs_ratio"] == pytest.approx(1.0) and control["density"] is None
        # Calibrated on training images: every gated layer at rho there (9 layers, 6 images of 12x16).
        assert pag["metrics"]["calibration/density_after"] == pytest.approx(0.5, abs=1 / (6 * 12 * 16))
        # Truncation removes whole blocks' 3x3 convs (each ~7% of this network): the closest to PAG's cost.
        assert abs(trunc["macs_ratio"] - pag["macs_ratio"]) <= 0.04
        for p in (pag, control, trunc):
            assert p["time_ratio"] > 0 and p["metrics"]["semantic/miou"] == p["metrics"]["semantic/miou"]
    for check in summary["checks"]:
        point = points[(check["seed"], check["claim"].split(" ")[0])]
        if "MACs ratio <=" in check["claim"]:
            assert check["ok"] == (point["macs_ratio"] <= 0.70)
        if "ponder ratio" in check["claim"]:
            assert check["ok"] == (point["ponder_boundary_ratio"] is not None and point["ponder_boundary_ratio"] >= 1.2)
        if " - truncated" in check["claim"]:
            trunc = points[(check["seed"], "truncated")]
            assert check["value"] == pytest.approx(point["metrics"]["semantic/miou"] - trunc["metrics"]["semantic/miou"])
    assert len([c for c in summary["checks"] if " - truncated" in c["claim"]]) == 2
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "summary over 2 seed(s)" in output and "claims:" in output
    table = output[output.index("summary over 2 seed(s)"):]
    assert "pag-rho-0_5" in table and "truncated" in table and "dense-control" in table

    client = MlflowClient(f"sqlite:///{out / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pag-demo")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.pag_kind = 'pipeline'")
    assert parent.info.run_name == "demo" and parent.info.status == "FINISHED"
    stages = client.search_runs([experiment.experiment_id], "tags.pag_kind = 'stage'")
    # The base once, the comparison once per seed, each seed's stage with its own seed.
    assert sorted(r.data.tags["pag_stage"] for r in stages) == sorted(
        ["base"] + [f"{n}-s{s}" for s in (0, 1) for n in ("pag-rho-0_5", "dense-control", "truncated")]
    )
    assert {r.data.params.get("stage.seed") for r in stages if r.data.tags["pag_stage"].endswith("-s1")} == {"1"}
