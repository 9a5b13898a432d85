"""Test helper: `mlflow server` started with the flags of infra/mlflow/docker-compose.yaml,
SQLite standing in for PostgreSQL and moto's S3 server for AWS S3, on 127.0.0.1.

The server gets the S3 endpoint and credentials in its own environment (as the compose file
gives them to the container); clients need none of them, since `--serve-artifacts` proxies
every artifact request. Stopped by its process group id (it runs in its own session).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import yaml

from tests.support.mlflow_server import MlflowServer, launch_mlflow_server, stop_mlflow_server

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "mlflow" / "docker-compose.yaml"


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
    flags = compose_server_flags()
    flags["--artifacts-destination"] = artifacts_destination
    env = {**os.environ, **s3_env, "MLFLOW_S3_ENDPOINT_URL": s3_env["AWS_ENDPOINT_URL"]}
    return launch_mlflow_server(root, flags, env)


__all__ = ["compose_server_flags", "start_s3_mlflow_server", "stop_mlflow_server"]
