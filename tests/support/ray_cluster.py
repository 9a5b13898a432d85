"""Test fixture: a real `ray start --head` cluster on 127.0.0.1, with its own ports and temp dir.

Ray 2.60 turns on token authentication by default. The fixture handles it the way a user
would on a shared machine: it generates a token into a file of its own (instead of the
user-wide ~/.ray/auth_token that other people's clusters read) and points every process at it
with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH; `env` carries those for clients
(`ray job submit`, drivers).

The head runs with `--block` as a subprocess in a new session. Teardown sends SIGTERM to that
`ray start` process alone: its handler stops the node's processes in order (a few seconds).
Signalling the whole group instead stops the GCS first, and the rest then wait ~30 s on it.
Then SIGKILL for the group and any process still holding the cluster's temp dir. Never
`ray stop`, which would stop every Ray cluster on the machine. RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
turns off the drain (for Serve replicas on Kubernetes) that Ray 2.60's SIGTERM handler runs
before stopping: a test cluster has nothing to drain.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.mlflow_server import free_port

STARTUP_TIMEOUT_S = 240


@dataclass
class RayCluster:
    """A running head node: GCS address, dashboard (job) address, env for clients."""

    address: str
    dashboard_url: str
    temp_dir: Path
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path = field(default=Path())


def start_ray_head(num_cpus: int = 2) -> RayCluster:
    """Start a head node and wait until its job API answers."""
    # Short path: Ray's unix socket paths must stay under ~107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path), RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    env.pop("RAY_ADDRESS", None)
    # As a user with the venv activated: job entrypoints run `python` from PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    gcs_port, dash_port = free_port(), free_port()
    ports = {
        "--port": gcs_port,
        "--dashboard-port": dash_port,
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    # Worker ports: a range clear of the ports picked above (Ray refuses to start on an overlap).
    worker_base = 20000 + secrets.randbelow(30000)
    while any(worker_base <= port <= worker_base + 200 for port in ports.values()):
        worker_base = 20000 + secrets.randbelow(30000)
    cmd = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1",
        "--dashboard-host", "127.0.0.1",
        "--include-dashboard", "true",
        "--num-cpus", str(num_cpus),
        "--temp-dir", str(temp_dir),
        "--min-worker-port", str(worker_base),
        "--max-worker-port", str(worker_base + 200),
        "--disable-usage-stats",
    ]
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    log_path = temp_dir / "ray-start.log"
    proc = subprocess.Popen(
        cmd, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    cluster = RayCluster(
        address=f"127.0.0.1:{gcs_port}",
        dashboard_url=f"http://127.0.0.1:{dash_port}",
        temp_dir=temp_dir,
        env=env,
        process=proc,
        log_path=log_path,
    )
    cluster.env["RAY_ADDRESS"] = cluster.address
    token = token_path.read_text()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
        request = urllib.request.Request(
            f"{cluster.dashboard_url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                if resp.status == 200:
                    return cluster
        except OSError:
            time.sleep(1)
    stop_ray_head(cluster)
    raise RuntimeError(f"ray head not ready after {STARTUP_TIMEOUT_S}s: {log_path.read_text()[-3000:]}")


def stop_ray_head(cluster: RayCluster) -> None:
    """Stop this cluster only: `ray start` stops its node, then its group and stragglers die."""
    if cluster.process.poll() is None:
        cluster.process.terminate()
        try:
            cluster.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(cluster.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    cluster.process.wait(timeout=30)
    # Workers and agents may have left the group; they all carry our temp dir or session.
    kill_mentioning(str(cluster.temp_dir))


def kill_mentioning(marker: str) -> None:
    """SIGKILL every process whose command line contains `marker` (see `pids_mentioning`)."""
    for pid in pids_mentioning(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def pids_mentioning(marker: str) -> list[int]:
    """PIDs whose command line contains `marker` (read from /proc; psutil is not installed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU head node for a module's `ray job submit` tests (stopped after the module, so its
    processes do not compete for the CPUs with the rest of the session)."""
    cluster = start_ray_head(num_cpus=2)
    yield cluster
    stop_ray_head(cluster)
