"""The staged pipeline with everything on S3 (moto's server on 127.0.0.1), run as a user runs
it (`python pipelines/staged.py --config configs/demo.yaml --set ...`, shrunk to seconds):

- data shards, Ray Train checkpoints, stage records and MLflow artifacts all land in the bucket;
- the first run is killed (its whole process group: driver, raylet, workers) once Ray Train
  has registered a checkpoint of the first stage on S3 (its run snapshot names it: a
  checkpoint directory is uploaded before the snapshot is written, and a run killed in between
  rightly starts the stage again from scratch); the re-run of the same pipeline id resumes that
  stage from the S3 checkpoint (not from scratch) and finishes the pipeline;
- a secret planted in the environment (AWS_SECRET_ACCESS_KEY) and one planted in the config
  (a password in the tracking URI) appear nowhere: not in stdout/stderr, MLflow params, tags,
  registry tags, nor in any object of the bucket (MLflow artifacts, Ray's run files).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Optional

import pytest
from mlflow.tracking import MlflowClient

from pipelines.train.stages import SNAPSHOT_FILE
from tests.support.infra import start_s3_mlflow_server, stop_mlflow_server
from tests.support.ray_cluster import kill_mentioning
from tests.support.s3 import s3_server  # noqa: F401
from tests.support.staged_data import DEMO, ROOT, tiny_overrides

# Two pipeline runs on a shared 2-core machine: minutes each, more under load.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

BASE_ITERATIONS = 16
STAGES = (
    f"[{{name: base, iterations: {BASE_ITERATIONS}, lr: 0.01}},"
    " {name: rho-0_5, iterations: 2, lr: 0.01, multipool: res5, gated: [res4, res5], rho: 0.5, lam: 0.01}]"
)
PID = "s3e2e"


def bucket_keys(client, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def registered_iteration(client, bucket: str, run_prefix: str, keys: list[str]) -> Optional[int]:
    """The iteration of the checkpoint Ray Train would resume the run from, or None.

    Read as `check_resume_checkpoint` reads it: the run's snapshot names its latest checkpoint
    directory, whose `state.pt` is on S3 (`keys`: the bucket's keys, listed before this call).
    """
    if run_prefix + SNAPSHOT_FILE not in keys:
        return None
    body = client.get_object(Bucket=bucket, Key=run_prefix + SNAPSHOT_FILE)["Body"].read()
    latest = json.loads(body).get("latest_checkpoint_result")
    if not latest or f"{run_prefix}{latest['checkpoint_dir_name']}/state.pt" not in keys:
        return None
    return int(latest["metrics"]["iteration"])


def kill_group(proc: subprocess.Popen, ray_tmp: str) -> None:
    """SIGKILL the run's process group, then any Ray process living in its temp dir."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    for _ in range(3):
        kill_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        time.sleep(1)


def test_demo_pipeline_on_s3_resumes_from_s3_checkpoint_and_leaks_no_secret(s3_server, tmp_path):  # noqa: F811
    from pipelines.datasets.convert import convert
    from pipelines.datasets.write_formats import write_dataset

    s3 = s3_server.client()
    bucket = s3_server.make_bucket()
    shards_uri, storage_uri = f"s3://{bucket}/shards/nyuv2", f"s3://{bucket}/runs"
    write_dataset("nyuv2", tmp_path / "raw", n_per_split={"train": 8, "test": 2}, size=(48, 64), seed=0)
    convert("nyuv2", str(tmp_path / "raw"), shards_uri)

    planted_env = f"pl4nted-ENV-{uuid.uuid4().hex}"
    planted_pw = f"pl4nted-PW-{uuid.uuid4().hex}"
    server = start_s3_mlflow_server(tmp_path / "mlflow", f"s3://{bucket}/mlflow", s3_server.env())
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths
    try:
        host = server.uri.split("://", 1)[1]
        # tiny_overrides only formats its paths into `key=value` strings; URIs pass through.
        overrides = tiny_overrides(shards_uri, storage_uri, STAGES) + [
            f"pipeline_id={PID}",
            "train.checkpoint_every=4",
            f"tracking.tracking_uri=http://alice:{planted_pw}@{host}",
            "tracking.experiment=infra-s3",
            "tracking.registered_model=infra-s3-model",
        ]
        cmd = [sys.executable, "pipelines/staged.py", "--config", str(DEMO.relative_to(ROOT))]
        for item in overrides:
            cmd += ["--set", item]
        env = dict(os.environ)
        env.update(s3_server.env())
        # moto accepts any secret: the planted one is the credential the pipeline really uses.
        env.update(AWS_SECRET_ACCESS_KEY=planted_env, RAY_TMPDIR=ray_tmp, PYTHONUNBUFFERED="1")
        env.pop("RAY_ADDRESS", None)

        # Run 1: killed as soon as Ray Train has registered a checkpoint of stage `base` on S3.
        first_log = tmp_path / "first.log"
        with open(first_log, "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        prefix = f"runs/{PID}/{PID}-00-base/"
        deadline = time.monotonic() + 420
        registered: Optional[int] = None
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                registered = registered_iteration(s3, bucket, prefix, bucket_keys(s3, bucket))
                if registered is not None:
                    break
                time.sleep(0.3)
        finally:
            kill_group(proc, ray_tmp)
        assert registered is not None, (
            f"no registered checkpoint on S3 before the first run ended:\n{first_log.read_text()[-3000:]}"
        )
        done_key = f"runs/{PID}/stages/base.done.json"
        assert done_key not in bucket_keys(s3, bucket), "stage finished before the kill: raise BASE_ITERATIONS"

        # Run 2: the same command resumes and finishes.
        second_log = tmp_path / "second.log"
        with open(second_log, "w") as log:
            second = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1200)
        output = second_log.read_text()
        assert second.returncode == 0, f"second run failed; output in {second_log}:\n{output[-3000:]}"
        assert "stage 1/2 base: training" in output and "stage 2/2 rho-0_5: done" in output

        keys = bucket_keys(s3, bucket)
        # Everything on S3: shards, checkpoints of both stages, stage records, MLflow artifacts.
        assert any(k.startswith("shards/nyuv2/") for k in keys)
        assert f"{prefix}checkpoint_{BASE_ITERATIONS:08d}/state.pt" in keys
        assert f"runs/{PID}/{PID}-01-rho-0_5/checkpoint_00000002/state.pt" in keys
        assert done_key in keys and f"runs/{PID}/stages/rho-0_5.done.json" in keys
        mlflow_keys = [k for k in keys if k.startswith("mlflow/")]
        assert any(k.endswith("/front/front.csv") for k in mlflow_keys), mlflow_keys
        assert any(k.endswith("/eval/metrics.json") for k in mlflow_keys)
        assert any(k.endswith("/model/weights.safetensors") for k in mlflow_keys)  # nothing pickled
        assert any(k.endswith("/model/model.json") for k in mlflow_keys)
        assert not any(k.endswith(("/MLmodel", ".pkl", ".pth")) for k in mlflow_keys)
        assert not (ROOT / "runs" / PID).exists() and not (tmp_path / PID).exists()

        # Resumed from the S3 checkpoint: one child run, training restarted at (or past: the kill
        # lands a moment after the snapshot was read) the registered checkpoint,
        # every iteration's loss logged, the final state at the last iteration.
        client = MlflowClient(server.uri, registry_uri=server.uri)
        experiment = client.get_experiment_by_name("infra-s3")
        runs = client.search_runs([experiment.experiment_id])
        base_runs = [r for r in runs if r.data.tags.get("pag_stage") == "base"]
        assert len(base_runs) == 1
        base_id = base_runs[0].info.run_id
        resumed = [m.value for m in client.get_metric_history(base_id, "train/resumed_from")]
        assert resumed and all(registered <= v < BASE_ITERATIONS for v in resumed), (registered, resumed)
        steps = {m.step for m in client.get_metric_history(base_id, "train/loss")}
        assert steps == set(range(1, BASE_ITERATIONS + 1))

        # No planted secret anywhere.
        planted = (planted_env, planted_pw)
        texts = {"first run output": first_log.read_text(), "second run output": output}
        for run in runs:
            texts[f"params of {run.info.run_name}"] = repr(run.data.params)
            texts[f"tags of {run.info.run_name}"] = repr(run.data.tags)
        for mv in client.search_model_versions("name = 'infra-s3-model'"):
            texts[f"model version {mv.version}"] = repr((mv.tags, mv.source))
        for key in keys:
            texts[f"s3://{bucket}/{key}"] = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("latin-1")
        leaks = [where for where, text in texts.items() if any(p in text for p in planted)]
        assert not leaks, f"planted secrets found in: {leaks}"
        parent = next(r for r in runs if r.data.tags.get("pag_kind") == "pipeline")
        assert parent.data.params["tracking.tracking_uri"] == f"http://alice:***@{host}"
    finally:
        stop_mlflow_server(server)
        kill_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
