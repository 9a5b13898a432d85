"""A local S3-compatible server for tests: moto's server on 127.0.0.1 at a free port.

Usage in a test file:

    from tests.support.s3 import s3_server  # noqa: F401

    @pytest.mark.slow
    def test_something(s3_server):
        bucket = s3_server.make_bucket()           # a fresh, empty bucket name
        uri = f"s3://{bucket}/some/prefix"
        ...                                         # AWS_* variables point at the server

One `python -m moto.server` process serves the whole pytest session: started on first use,
stopped through its process handle when the interpreter exits (a module-level singleton, so
importing only `s3_server` is enough). Each test gets its own bucket, and for the duration of the
test the standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, AWS_REGION) point at the server, so code reading them (boto3, pyarrow,
`pipelines.datasets.storage.StorageOptions.from_env()`) talks to it without further setup.
Processes started by the test (Ray workers) inherit them if started after the fixture.
"""
from __future__ import annotations

import atexit
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(endpoint_url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    """Poll the server until it answers HTTP, or raise with its output if it died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = Path(_LOG.name).read_text(errors="replace") if _LOG else ""
            raise RuntimeError(f"moto server exited with code {proc.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto server at {endpoint_url} did not answer within {timeout_s} s")


@dataclass(frozen=True)
class S3Server:
    """A running moto server.

    Attributes:
        endpoint_url: "http://127.0.0.1:<port>".
        access_key_id: credentials the server accepts.
        secret_access_key: credentials the server accepts.
        region: the region buckets are created in.
        pid: the server's process id.
    """

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    pid: int

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        bucket = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def env(self) -> dict[str, str]:
        """The standard AWS environment variables that point at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }


_SERVER: S3Server | None = None
_PROC: subprocess.Popen | None = None
# The server logs every request; it writes to a file, never to a pipe nobody drains (a full
# pipe buffer blocks the server mid-request and every later S3 call times out).
_LOG: Any = None


def _stop() -> None:
    """Stop the server this module started, by its handle (registered with atexit)."""
    if _PROC is None or _PROC.poll() is not None:
        return
    _PROC.terminate()
    try:
        _PROC.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _PROC.kill()
        _PROC.wait(timeout=10)
    if _LOG is not None:
        _LOG.close()
        Path(_LOG.name).unlink(missing_ok=True)


def start_server() -> S3Server:
    """Start the moto server on first call (later calls return the same one)."""
    global _SERVER, _PROC, _LOG
    if _SERVER is not None and _PROC is not None and _PROC.poll() is None:
        return _SERVER
    port = _free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    _LOG = tempfile.NamedTemporaryFile(prefix="moto-server-", suffix=".log", delete=False)
    _PROC = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=_LOG,
        stderr=subprocess.STDOUT,
    )
    atexit.register(_stop)
    try:
        _wait_until_up(endpoint_url, _PROC, timeout_s=60.0)
    except BaseException:
        _stop()
        raise
    _SERVER = S3Server(endpoint_url, ACCESS_KEY, SECRET_KEY, REGION, _PROC.pid)
    return _SERVER


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A running moto server, with the AWS variables pointing at it for this test."""
    server = start_server()
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    # A developer's own profile or session token must not leak into requests to moto.
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    yield server


__all__ = ["S3Server", "s3_server", "start_server"]
