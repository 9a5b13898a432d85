"""Test helper: `mlflow server` started with the flags of infra/mlflow/docker-compose.yaml,
SQLite standing in for PostgreSQL and moto's S3 server for AWS S3, on 127.0.0.1.

The server gets the S3 endpoint and credentials in its own environment (as the compose file
gives them to the container); clients need none of them, since `--serve-artifacts` proxies
every artifact request. Stopped by its process group id (it runs in its own session).
"""
from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Mapping, Optional

import yaml

from tests.support.mlflow_server import MlflowServer, launch_mlflow_server, stop_mlflow_server

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "mlflow" / "docker-compose.yaml"
AUTH_INI = ROOT / "infra" / "mlflow" / "basic_auth.ini"


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


def start_s3_mlflow_server(
    root: Path,
    artifacts_destination: str,
    s3_env: Mapping[str, str],
    admin_password: Optional[str] = None,
) -> MlflowServer:
    """Start the compose file's server locally: SQLite at root/mlflow.db, artifacts on S3.

    With `admin_password`, with the compose file's authentication too: the shipped
    basic_auth.ini with its database moved to SQLite at root/auth.db, the admin password in
    the server's environment (MLFLOW_AUTH_ADMIN_PASSWORD) as the compose file gives it.
    Without, the `--app-name` flag is dropped (tests about other things than authentication).
    """
    flags = compose_server_flags()
    flags["--artifacts-destination"] = artifacts_destination
    env = {**os.environ, **s3_env, "MLFLOW_S3_ENDPOINT_URL": s3_env["AWS_ENDPOINT_URL"]}
    if admin_password is None:
        flags.pop("--app-name", None)
    else:
        root.mkdir(parents=True, exist_ok=True)
        config = configparser.ConfigParser()
        config.read(AUTH_INI)
        config["mlflow"]["database_uri"] = f"sqlite:///{root / 'auth.db'}"
        with open(root / "basic_auth.ini", "w") as f:
            config.write(f)
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(root / "basic_auth.ini"),
            MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY="test-csrf-key-" + "z" * 16,
        )
    return launch_mlflow_server(root, flags, env)


__all__ = ["compose_server_flags", "start_s3_mlflow_server", "stop_mlflow_server"]
