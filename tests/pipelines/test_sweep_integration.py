"""A real sweep end to end: local Ray (Tune over Train), a real MLflow server, generated scenes.

One grid sweep of 4 trials (lambda in {1e-3, 3e-3, 1e-2, 1e300}; the last one's loss is
infinite, so that trial's stage raises) runs once for the module: it is interrupted (SIGUSR1, which
Tune treats like Ctrl+C) as soon as the first trial stage finishes, then resubmitted with the
same id. The tests check what a user would look at afterwards, each against a reference
computed here from the trial table (the non-dominated set and the budget rule written out
naively), never against the sweep's own front.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipelines.sweeps.run import SweepInterrupted, run_sweep
from pipelines.config import load_sweep_config
from tests.support.mlflow_server import free_port, mlflow_server  # noqa: F401
from tests.support.sweep import sweep_data, sweep_yaml  # noqa: F401

pytestmark = pytest.mark.slow

LAMS = [1e-3, 3e-3, 1e-2, 1e300]
# The stage runner's error for the infinite loss (NonFiniteLossError is a StageError).
RAISED = re.compile(r"(StageError|NonFiniteLossError): stage 'target'")
BUDGETS = [0.5, 0.95, 1.0]


def _wait_then_interrupt(pattern_root: Path, stop: threading.Event) -> None:
    """Send SIGUSR1 to this process once a trial stage's done record exists."""
    while not stop.is_set():
        if list(pattern_root.glob("trials/*/stages/*.done.json")):
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, sweep_data, mlflow_server):  # noqa: F811
    import ray

    root = tmp_path_factory.mktemp("sweep")
    sweep_id = f"t{uuid.uuid4().hex[:8]}"
    path = sweep_yaml(
        root / "sweep.yaml",
        sweep_data["uri"],
        root / "store",
        sweep_data["base"],
        {
            "sweep_id": sweep_id,
            "algorithm": "grid",
            "num_samples": 1,
            "max_concurrent": 2,
            "trial_cpus": 0.05,
            "max_failures": 0,
            "budgets": BUDGETS,
            "space": {"lam": {"choices": LAMS}, "rho": 0.6, "tau_shape": "cosine"},
        },
        tracking_uri=mlflow_server.uri,
    )
    pipeline, sweep = load_sweep_config(path)
    sweep_root = root / "store" / sweep_id
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=free_port())
    try:
        stop = threading.Event()
        watcher = threading.Thread(target=_wait_then_interrupt, args=(sweep_root, stop), daemon=True)
        watcher.start()
        interrupted = None
        try:
            run_sweep(pipeline, sweep, progress=print)
        except SweepInterrupted as err:
            interrupted = err
        stop.set()
        records = {str(p): p.stat().st_mtime_ns for p in sweep_root.glob("trials/*/stages/*.done.json")}
        checkpoints = sorted(str(p) for p in sweep_root.glob("trials/*/*/checkpoint_*"))
        result = run_sweep(pipeline, sweep, progress=print)
    finally:
        ray.shutdown()
    return {
        "result": result,
        "interrupted": interrupted,
        "records_before": records,
        "checkpoints_before": checkpoints,
        "root": sweep_root,
        "data": sweep_data,
        "server": mlflow_server,
        "experiment": pipeline.tracking.experiment,
        "sweep_id": sweep_id,
    }


def _client(swept):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=swept["server"].uri, registry_uri=swept["server"].uri)


def _artifact_text(swept, run_id: str, path: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(swept["server"].uri)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)).read_text()


def _table(swept) -> list[dict]:
    text = _artifact_text(swept, swept["result"].parent_run_id, "sweep/trials.csv")
    return list(csv.DictReader(io.StringIO(text)))


def test_interrupted_sweep_resumes_without_retraining(swept):
    assert swept["interrupted"] is not None, "the first submission should have been interrupted"
    assert swept["records_before"], "a stage had finished before the interruption"
    for path, mtime in swept["records_before"].items():
        assert Path(path).stat().st_mtime_ns == mtime, f"{path} was written again after resuming"
    # Checkpoints of stages finished before the interruption are still the only ones of their runs.
    after = sorted(str(p) for p in swept["root"].glob("trials/*/*/checkpoint_*"))
    assert set(swept["checkpoints_before"]) <= set(after)
    # One Tune experiment, restored: four trials in total, not four more.
    assert len(swept["result"].trials) == len(LAMS)


def test_every_trial_is_in_the_table_and_the_raising_one_is_reported(swept):
    rows = _table(swept)
    assert sorted(float(r["lam"]) for r in rows) == sorted(LAMS)
    by_lam = {float(r["lam"]): r for r in rows}
    assert by_lam[1e300]["status"] == "error"
    assert RAISED.search(by_lam[1e300]["error"]), by_lam[1e300]["error"]
    for lam in LAMS[:3]:
        row = by_lam[lam]
        assert row["status"] == "done"
        assert row["stage"] == "target"
        assert 0 < float(row["macs"]) <= float(row["dense_macs"])
        assert 0.0 <= float(row["score"]) <= 1.0


def test_parent_and_child_runs(swept):
    from pipelines.tracking.tracker import PARENT_TAG, TAG_KIND

    client = _client(swept)
    parent = client.get_run(swept["result"].parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_KIND] == "sweep"
    assert parent.data.tags["failed_trials"] != "none"
    assert parent.data.metrics["trials_done"] == 3 and parent.data.metrics["trials_failed"] == 1
    exp = client.get_experiment_by_name(swept["experiment"])
    children = client.search_runs([exp.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert len(children) == len(LAMS)
    by_lam = {float(c.data.params["trial.lam"]): c for c in children}
    failed = by_lam[1e300]
    assert failed.info.status == "FAILED" and RAISED.search(failed.data.tags["pag_error"])
    for lam in LAMS[:3]:
        run = by_lam[lam]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["stages.target.rho"]) == 0.6
        assert run.data.params["stages.target.tau_shape"] == "cosine"
        assert "eval/semantic/miou" in run.data.metrics
        assert any(k.startswith("eval/density/") for k in run.data.metrics), run.data.metrics
        files = [f.path for f in client.list_artifacts(run.info.run_id, "eval")]
        assert any(Path(f).name.startswith("ponder_") for f in files), files


def _naive_front(rows: list[dict]) -> set[str]:
    done = [(r["trial_id"], float(r["macs"]), float(r["score"])) for r in rows if r["status"] == "done"]
    keep = set()
    for name, cost, score in done:
        beaten = any(c <= cost and s >= score and (c < cost or s > score) for _, c, s in done)
        if not beaten:
            keep.add(name)
    return keep


def test_front_artifacts_match_a_naive_front(swept):
    rows = _table(swept)
    parent = swept["result"].parent_run_id
    table = list(csv.DictReader(io.StringIO(_artifact_text(swept, parent, "front/front.csv"))))
    assert {r["name"] for r in table if r["on_front"] == "True"} == _naive_front(rows)
    png = Path(_download(swept, parent, "front/front.png")).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def _download(swept, run_id: str, path: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(swept["server"].uri)
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)


def test_front_models_registered_with_budget_aliases(swept):
    rows = [r for r in _table(swept) if r["status"] == "done"]
    client = _client(swept)
    name = swept["result"].registered_model
    assert name == f"pag-test-{swept['sweep_id']}"
    front = _naive_front(rows)
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(v.tags["pag_stage"] for v in versions) == sorted(front)
    dense = max(float(r["dense_macs"]) for r in rows)
    for fraction in BUDGETS:
        fits = [r for r in rows if r["trial_id"] in front and float(r["macs"]) <= fraction * dense]
        alias = f"flops-{fraction:g}".replace(".", "_")
        if not fits:
            with pytest.raises(Exception):
                client.get_model_version_by_alias(name, alias)
            continue
        best = sorted(fits, key=lambda r: (-float(r["score"]), float(r["macs"]), r["trial_id"]))[0]
        version = client.get_model_version_by_alias(name, alias)
        assert version.tags["pag_stage"] == best["trial_id"]
        assert float(version.tags["macs"]) == pytest.approx(float(best["macs"]))
        assert float(version.tags["lam"]) == pytest.approx(float(best["lam"]))
        assert float(version.tags["rho"]) == 0.6


def test_evaluate_accepts_a_budget_alias(swept, tmp_path):
    from pipelines import evaluate

    name = swept["result"].registered_model
    alias = next(iter(swept["result"].aliases))
    version = _client(swept).get_model_version_by_alias(name, alias)
    out = tmp_path / "eval"
    code = evaluate.main(
        [
            "--model", f"models:/{name}@{alias}",
            "--data", swept["data"]["uri"],
            "--split", "test",
            "--out", str(out),
            "--tracking-uri", swept["server"].uri,
            "--max-images", "2",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    # The registered model, scored again on the same 2 test images, spends what the trial measured.
    assert metrics["macs"] == pytest.approx(float(version.tags["macs"]), rel=1e-6)
