"""Test helper: `mlflow server` started with the flags of infra/mlflow/docker-compose.yaml,
SQLite standing in for PostgreSQL and moto's S3 server for AWS S3, on 127.0.0.1.

The server gets the S3 endpoint and credentials in its own environment (as the compose file
gives them to the container); clients need none of them, since `--serve-artifacts` proxies
every artifact request. Stopped by its process group id (it runs in its own session).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Mapping

import yaml

from tests.support.mlflow_server import MlflowServer, free_port, stop_mlflow_server

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "mlflow" / "docker-compose.yaml"
STARTUP_TIMEOUT_S = 180


def compose_server_flags() -> dict[str, str]:
    """The `mlflow server` flags of the compose file's mlflow service, flag -> value ('' for
    a switch)."""
    command = yaml.safe_load(COMPOSE.read_text())["services"]["mlflow"]["command"]
    flags: dict[str, str] = {}
    i = 0
    while i < len(command):
        flag = str(command[i])
        assert flag.startswith("--"), f"{COMPOSE}: expected a flag at {command[i:]}"
        value = str(command[i + 1]) if i + 1 < len(command) and not str(command[i + 1]).startswith("--") else ""
        flags[flag] = value
        i += 2 if value else 1
    return flags


def start_s3_mlflow_server(root: Path, artifacts_destination: str, s3_env: Mapping[str, str]) -> MlflowServer:
    """Start the compose file's server locally: SQLite at root/mlflow.db, artifacts on S3."""
    root.mkdir(parents=True, exist_ok=True)
    flags = compose_server_flags()
    port = free_port()
    db_path = root / "mlflow.db"
    flags.update({
        "--backend-store-uri": f"sqlite:///{db_path}",
        "--artifacts-destination": artifacts_destination,
        "--host": "127.0.0.1",
        "--port": str(port),
        "--workers": "1",
    })
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server"]
    for flag, value in flags.items():
        cmd += [flag, value] if value else [flag]
    env = dict(os.environ)
    env.update(s3_env)
    env["MLFLOW_S3_ENDPOINT_URL"] = s3_env["AWS_ENDPOINT_URL"]
    log = open(root / "mlflow-server.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", db_path, proc)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}: {(root / 'mlflow-server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop_mlflow_server(server)
    raise RuntimeError(f"mlflow server at {server.uri} not healthy after {STARTUP_TIMEOUT_S}s")


__all__ = ["compose_server_flags", "start_s3_mlflow_server", "stop_mlflow_server"]
