"""Test fixture: a real `mlflow server` with a SQLite backend on 127.0.0.1 at a free port.

Started as a subprocess in its own process group, stopped by that group's id at teardown.
Artifacts are proxied by the server (`--serve-artifacts`) into the test's temp directory, so
clients need no filesystem access to them (the same as a remote tracking server).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

STARTUP_TIMEOUT_S = 180


@dataclass
class MlflowServer:
    """A running tracking server: its URI, its SQLite path and its process."""

    uri: str
    db_path: Path
    process: subprocess.Popen


def free_port() -> int:
    """A port the OS reports free on 127.0.0.1 (it may be taken again before use; rare)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_mlflow_server(root: Path, flags: dict[str, str], env: Optional[dict[str, str]] = None) -> MlflowServer:
    """Run `mlflow server` with a SQLite store under `root`, on 127.0.0.1 at a free port, plus
    `flags` ({"--flag": "value" or "" for a switch}); block until /health answers."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    db_path = root / "mlflow.db"
    flags = {
        **flags,
        "--backend-store-uri": f"sqlite:///{db_path}",
        "--host": "127.0.0.1",
        "--port": str(port),
        "--workers": "1",
    }
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server"]
    for flag, value in flags.items():
        cmd += [flag, value] if value else [flag]
    log_path = root / "mlflow-server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", db_path, proc)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop_mlflow_server(server)
    raise RuntimeError(f"mlflow server at {server.uri} not healthy after {STARTUP_TIMEOUT_S}s; see {log_path}")


def start_mlflow_server(root: Path) -> MlflowServer:
    """Start `mlflow server` under `root` serving artifacts from root/artifacts."""
    return launch_mlflow_server(root, {"--artifacts-destination": str(root / "artifacts"), "--serve-artifacts": ""})


def stop_mlflow_server(server: MlflowServer) -> None:
    """Terminate the server's process group (uvicorn/gunicorn workers included)."""
    if server.process.poll() is not None:
        return
    os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A tracking server shared by the session's tests (each test uses its own experiment)."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    stop_mlflow_server(server)
