"""infra/mlflow: the tracking server's compose file and manifests, and a live round trip.

The live test starts `mlflow server` with the compose file's flags on 127.0.0.1, SQLite for
the PostgreSQL backend and moto's S3 server as the artifact destination, then sends a run,
an artifact and a registered PyTorch model through it, loads the model back by alias and
finds the objects in the bucket with boto3. The client process has no S3 credentials at all.
"""
from __future__ import annotations

import fnmatch
import re
import urllib.parse
from pathlib import Path

import pytest
import torch
import yaml

from tests.support.infra import compose_server_flags, start_s3_mlflow_server, stop_mlflow_server
from tests.support.s3 import s3_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
MLFLOW_DIR = ROOT / "infra" / "mlflow"
KUBE_TRACKING_URI = "http://mlflow.pag-ray.svc.cluster.local:5000"


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def k8s_docs() -> dict[tuple[str, str], dict]:
    docs = yaml.safe_load_all((MLFLOW_DIR / "kubernetes.yaml").read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def flag_dict(args: list) -> dict[str, str]:
    out, i = {}, 0
    while i < len(args):
        value = str(args[i + 1]) if i + 1 < len(args) and not str(args[i + 1]).startswith("--") else ""
        out[str(args[i])] = value
        i += 2 if value else 1
    return out


def check_server_flags(flags: dict[str, str], where: str) -> None:
    assert "--serve-artifacts" in flags, where
    assert flags["--artifacts-destination"].startswith("s3://"), where
    backend = urllib.parse.urlparse(flags["--backend-store-uri"])
    assert backend.scheme.startswith("postgresql"), where
    assert backend.password is None, f"{where}: the database password must come from PGPASSWORD"
    assert "--default-artifact-root" not in flags, f"{where}: clients would need S3 access"


def test_compose_file():
    compose = yaml.safe_load((MLFLOW_DIR / "docker-compose.yaml").read_text())
    flags = compose_server_flags()
    check_server_flags(flags, "docker-compose.yaml")
    mlflow_service, postgres = compose["services"]["mlflow"], compose["services"]["postgres"]
    assert mlflow_service["environment"]["PGPASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert urllib.parse.urlparse(flags["--backend-store-uri"]).hostname == "postgres"
    # Published on localhost unless the operator names the private address.
    (port,) = mlflow_service["ports"]
    assert port == "${MLFLOW_BIND_ADDRESS:-127.0.0.1}:5000:5000"
    assert "ports" not in postgres


def test_kubernetes_manifests():
    docs = k8s_docs()
    deployment = docs[("Deployment", "mlflow")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    flags = flag_dict(container["args"])
    check_server_flags(flags, "kubernetes.yaml")
    assert urllib.parse.urlparse(flags["--backend-store-uri"]).hostname == "mlflow-postgres"
    assert ("Service", "mlflow-postgres") in docs
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pag-mlflow-db", "key": "POSTGRES_PASSWORD"}
    for doc in docs.values():
        if doc["kind"] == "Service":
            assert doc["spec"]["type"] == "ClusterIP", doc["metadata"]["name"]
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for item in c.get("env", []):
                if "value" in item:
                    assert "PASSWORD" not in item["name"] and "SECRET" not in item["name"], item
    # The URI the KubeRay jobs use reaches this Service and passes the server's Host check.
    service = docs[("Service", "mlflow")]
    parsed = urllib.parse.urlparse(KUBE_TRACKING_URI)
    assert parsed.hostname.split(".")[0] == service["metadata"]["name"]
    assert parsed.port == service["spec"]["ports"][0]["port"] == int(flags["--port"])
    allowed = flags["--allowed-hosts"].split(",")
    assert any(fnmatch.fnmatch(parsed.netloc, pattern) for pattern in allowed)
    for job in ("rayjob-staged.yaml", "rayjob-sweep.yaml"):
        assert f"tracking.tracking_uri={KUBE_TRACKING_URI}" in (ROOT / "infra" / "kuberay" / job).read_text()


def test_server_image_uses_the_client_pins():
    pins = constraints()
    text = (MLFLOW_DIR / "Dockerfile").read_text()
    install = re.search(r"pip install -c /tmp/constraints.txt ([^\\\n&]+)", text)
    assert install, "the server image must install through constraints.txt"
    packages = install.group(1).split()
    assert "mlflow" in packages and "boto3" in packages
    for name, version in re.findall(r"([A-Za-z0-9_.\-]+)==(\S+)", install.group(1)):
        assert name.lower() not in pins or pins[name.lower()] == version, name
    assert "psycopg2-binary==" in install.group(1)
    tag = f"mlflow-server:{pins['mlflow']}"
    compose = yaml.safe_load((MLFLOW_DIR / "docker-compose.yaml").read_text())
    assert compose["services"]["mlflow"]["image"].endswith(tag)
    (container,) = k8s_docs()[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(tag)


@pytest.mark.slow
def test_runs_artifacts_and_registered_model_round_trip_through_s3(s3_server, tmp_path, monkeypatch):  # noqa: F811
    import mlflow
    from mlflow.tracking import MlflowClient

    bucket = s3_server.make_bucket()
    server = start_s3_mlflow_server(tmp_path / "server", f"s3://{bucket}/mlflow", s3_server.env())
    try:
        # The client knows only the server URL: no S3 endpoint, no keys.
        for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        mlflow.set_tracking_uri(server.uri)
        mlflow.set_registry_uri(server.uri)
        mlflow.set_experiment("infra-roundtrip")
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()
        notes = tmp_path / "notes.txt"
        notes.write_text("pag-ray infra round trip\n")
        with mlflow.start_run() as run:
            mlflow.log_param("lam", 0.01)
            mlflow.log_metric("semantic/miou", 0.25, step=3)
            mlflow.log_artifact(str(notes), "docs")
            info = mlflow.pytorch.log_model(net, name="model", pip_requirements=["torch"], serialization_format="pickle")
        version = mlflow.register_model(info.model_uri, "infra-roundtrip-model").version
        client = MlflowClient(server.uri, registry_uri=server.uri)
        client.set_registered_model_alias("infra-roundtrip-model", "champion", version)

        # Read back through the server.
        got = client.get_run(run.info.run_id)
        assert got.data.params == {"lam": "0.01"}
        assert got.data.metrics == {"semantic/miou": 0.25}
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="docs/notes.txt", dst_path=str(tmp_path / "dl"))
        assert Path(local).read_text() == "pag-ray infra round trip\n"
        loaded = mlflow.pytorch.load_model("models:/infra-roundtrip-model@champion").eval()
        x = torch.randn(5, 4)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x))
        assert client.get_model_version_by_alias("infra-roundtrip-model", "champion").version == version

        # The objects are really in the bucket, under the artifacts destination.
        s3 = s3_server.client()
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
        assert all(k.startswith("mlflow/") for k in keys), keys
        notes_keys = [k for k in keys if k.endswith(f"{run.info.run_id}/artifacts/docs/notes.txt")]
        assert len(notes_keys) == 1, keys
        assert s3.get_object(Bucket=bucket, Key=notes_keys[0])["Body"].read() == b"pag-ray infra round trip\n"
        assert any(k.endswith("/MLmodel") for k in keys), keys
        weights = [k for k in keys if k.endswith(".pth")]
        assert weights, keys
    finally:
        stop_mlflow_server(server)
