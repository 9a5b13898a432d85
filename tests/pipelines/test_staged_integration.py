"""Integration: the staged pipeline on a real local Ray, a real MLflow server, `ray job submit`.

Each test runs the demo config shrunk to a few iterations on a few 48x64 generated scenes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipelines.train.stages import NonFiniteLossError, read_record
from pipelines.tracking.tracker import TAG_PIPELINE
from tests.support.mlflow_server import mlflow_server  # noqa: F401
from tests.support.ray_cluster import ray_cluster  # noqa: F401
from tests.support.staged_data import DEMO, ROOT, TWO_STAGES, make_shards, tiny_config, tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("data"), train=8, test=2, size=(48, 64))


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _runs(client, experiment, pipeline_id):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{TAG_PIPELINE}` = '{pipeline_id}'")


def _checkpoints(storage: Path, pipeline_id: str, index: int, stage: str) -> list[str]:
    run_dir = storage / pipeline_id / f"{pipeline_id}-{index:02d}-{stage}"
    return sorted(p.name for p in run_dir.glob("checkpoint_0*"))


def test_pipeline_tracks_registers_and_skips_finished_stages(local_ray, shards, tmp_path, mlflow_server):  # noqa: F811
    from pipelines.tracking.load import load_model
    from pipelines.train.curriculum import run_pipeline

    pid, exp, name = "it1", "it-exp-1", "it-model-1"
    extra = [f"pipeline_id={pid}", f"tracking.tracking_uri={mlflow_server.uri}",
             f"tracking.experiment={exp}", f"tracking.registered_model={name}", "tracking.budget=1.0"]
    # First run stops after the base stage (as if the pipeline were stopped there).
    first = tiny_config(shards, tmp_path, "[{name: base, iterations: 2, lr: 0.01}]", extra=extra)
    run_pipeline(first, progress=lambda _: None)
    base_record = read_record(first, first.stages[0])
    base_ckpts = _checkpoints(tmp_path, pid, 0, "base")
    assert base_record.iterations == 2 and base_ckpts == ["checkpoint_00000002"]

    lines: list[str] = []
    cfg = tiny_config(shards, tmp_path, TWO_STAGES, extra=extra)
    result = run_pipeline(cfg, progress=lines.append)
    assert "already done" in lines[0] and "base" in lines[0]
    assert read_record(cfg, cfg.stages[0]) == base_record  # not repeated
    assert _checkpoints(tmp_path, pid, 0, "base") == base_ckpts
    assert [r.stage for r in result.records] == ["base", "rho-0_5"]

    client = MlflowClient(mlflow_server.uri)
    runs = _runs(client, exp, pid)
    parents = [r for r in runs if r.data.tags.get("pag_kind") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("pag_kind") == "stage"]
    assert len(parents) == 1 and sorted(r.data.tags["pag_stage"] for r in children) == ["base", "rho-0_5"]
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in runs)
    parent = parents[0].info.run_id
    assert parents[0].data.params["stages.rho-0_5.rho"] == "0.5"
    assert sorted(a.path for a in client.list_artifacts(parent, "front")) == ["front/front.csv", "front/front.png"]
    rho_run = next(r for r in children if r.data.tags["pag_stage"] == "rho-0_5")
    evals = {a.path for a in client.list_artifacts(rho_run.info.run_id, "eval")}
    assert {"eval/metrics.json", "eval/pred_00.png", "eval/ponder_00.png"} <= evals
    loss_steps = [m.step for m in client.get_metric_history(rho_run.info.run_id, "train/loss")]
    assert sorted(loss_steps) == [1, 2]

    # One registered version (the only rho stage), both aliases on it, tags on it.
    mv = client.get_model_version_by_alias(name, "it1-champion")
    assert client.get_model_version_by_alias(name, "it1-rho-0_5").version == mv.version
    assert mv.tags["pag_stage"] == "rho-0_5" and float(mv.tags["macs"]) > 0
    served = load_model(f"models:/{name}@it1-champion", mlflow_server.uri)
    rho_record = result.records[1]
    reference = load_model(rho_record.checkpoint)  # the checkpoint's own weights
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        ref, got = reference(x), served(x)
    for task in ("semantic", "depth"):
        torch.testing.assert_close(got[task], ref[task], msg=task)
    assert float(mv.tags["macs"]) == pytest.approx(rho_record.metrics["macs"])


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _train_workers() -> list[int]:
    pids = []
    for pid in _descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "RayTrainWorker" in cmd:
            pids.append(pid)
    return pids


def test_worker_killed_mid_stage_resumes_from_checkpoint(local_ray, shards, tmp_path):
    from pipelines.checkpoint import load_state
    from pipelines.train.curriculum import run_pipeline

    # The kill lands right after the first registered checkpoint (iteration 3): the iterations
    # after it only need to outlast the kill, then the restart resumes and trains the rest.
    iterations = 12
    stages = f"[{{name: base, iterations: {iterations}, lr: 0.01}}]"
    cfg = tiny_config(shards, tmp_path, stages, workers=2, extra=["pipeline_id=kill", "train.checkpoint_every=3"])
    errors: list[BaseException] = []
    results = []

    def run():
        try:
            results.append(run_pipeline(cfg, progress=lambda _: None))
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    run_dir = tmp_path / "kill" / "kill-00-base"
    deadline = time.monotonic() + 400
    # Kill only once Ray Train has registered a checkpoint (its manager snapshot names one): a
    # checkpoint directory appears before the controller registers it, and a kill in between
    # rightly restarts from scratch.
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while time.monotonic() < deadline:
        if snapshot.is_file() and "checkpoint_0000" in snapshot.read_text():
            break
        time.sleep(0.2)
    victims = _train_workers()
    assert victims, "no RayTrainWorker process found under this test process"
    os.kill(victims[0], signal.SIGKILL)
    assert not (run_dir / f"checkpoint_{iterations:08d}").exists(), "killed too late: the stage had finished"
    thread.join(timeout=600)
    assert not errors, errors
    record = results[0].records[0]
    state = load_state(record.checkpoint)
    assert state["iteration"] == iterations and state["scheduler"]["last_epoch"] == iterations

    client = MlflowClient(results[0].tracking_uri)
    runs = _runs(client, "pag-demo", "kill")
    children = [r for r in runs if r.data.tags.get("pag_kind") == "stage"]
    assert len(children) == 1  # the restarted workers logged to the same child run
    run_id = children[0].info.run_id
    resumed = client.get_metric_history(run_id, "train/resumed_from")
    assert resumed and all(m.value >= 3 for m in resumed)  # not from scratch
    steps = {m.step for m in client.get_metric_history(run_id, "train/loss")}
    assert steps == set(range(1, iterations + 1))  # metrics continue to the last iteration


def test_nonfinite_loss_stops_with_clear_error_and_keeps_checkpoint(local_ray, shards, tmp_path):
    from pipelines.train.curriculum import run_pipeline

    stages = "[{name: base, iterations: 6, lr: 1.0e+12}]"
    cfg = tiny_config(shards, tmp_path, stages, extra=["pipeline_id=nan", "train.checkpoint_every=1"])
    with pytest.raises(NonFiniteLossError) as info:
        run_pipeline(cfg, progress=lambda _: None)
    message = str(info.value)
    assert "non-finite loss" in message and "stages.base.lr" in message
    kept = message.split("Last good checkpoint: ")[1].split(" ")[0]
    assert Path(kept, "state.pt").is_file()
    assert read_record(cfg, cfg.stages[0]) is None
    runs = _runs(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), "pag-demo", "nan")
    assert {r.info.status for r in runs} == {"FAILED"}


def test_ray_job_submit_against_a_started_cluster(ray_cluster, shards, tmp_path):  # noqa: F811
    storage = tmp_path / "jobstore"
    overrides = tiny_overrides(shards, storage, "[{name: base, iterations: 2, lr: 0.01}]") + ["pipeline_id=job"]
    cmd = [
        str(Path(sys.executable).with_name("ray")), "job", "submit",
        "--address", ray_cluster.dashboard_url,
        "--working-dir", str(ROOT),
        "--", "python", "pipelines/staged.py", "--config", str(DEMO.relative_to(ROOT)),
    ]
    for item in overrides:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, env=ray_cluster.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "stage 1/1 base: done" in proc.stdout
    assert (storage / "job" / "stages" / "base.done.json").is_file()
