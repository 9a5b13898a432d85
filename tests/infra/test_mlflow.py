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
    packages = [p.strip('"') for p in install.group(1).split()]
    assert "mlflow[auth]" in packages and "boto3" in packages, "the auth extra: basic-auth needs Flask-WTF"
    assert any(p.startswith("flask-wtf==") for p in packages), "server-only packages are pinned here"
    for name, version in re.findall(r"([A-Za-z0-9_.\-]+)==(\S+)", install.group(1)):
        assert name.lower() not in pins or pins[name.lower()] == version, name
    assert "psycopg2-binary==" in install.group(1)
    tag = f"mlflow-server:{pins['mlflow']}"
    compose = yaml.safe_load((MLFLOW_DIR / "docker-compose.yaml").read_text())
    assert compose["services"]["mlflow"]["image"].endswith(tag)
    (container,) = k8s_docs()[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(tag)


def auth_config():
    import configparser

    config = configparser.ConfigParser()
    assert config.read(MLFLOW_DIR / "basic_auth.ini"), "infra/mlflow/basic_auth.ini is missing"
    return config["mlflow"]


def test_server_requires_authentication_everywhere_it_is_shipped():
    """Both deployments run MLflow's basic-auth app; its config carries no password and
    reaches the database the same way the tracking store does."""
    compose = yaml.safe_load((MLFLOW_DIR / "docker-compose.yaml").read_text())
    (container,) = k8s_docs()[("Deployment", "mlflow")]["spec"]["template"]["spec"]["containers"]
    for where, flags in (("docker-compose.yaml", compose_server_flags()), ("kubernetes.yaml", flag_dict(container["args"]))):
        assert flags.get("--app-name") == "basic-auth", f"{where}: no authentication in front of MLflow"
    config = auth_config()
    assert "admin_password" not in config, "the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD"
    assert config["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert config["default_permission"] in ("READ", "NO_PERMISSIONS")
    database = urllib.parse.urlparse(config["database_uri"])
    assert database.scheme.startswith("postgresql") and database.password is None
    # The host both deployments resolve: the Kubernetes Service, and a compose network alias.
    assert ("Service", database.hostname) in k8s_docs()
    postgres = compose["services"]["postgres"]
    assert database.hostname in postgres["networks"]["default"]["aliases"]
    # The admin password and the CSRF key: from the .env file (compose, required) or a
    # Secret (Kubernetes).
    env = {e["name"]: e for e in container["env"]}
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        value = compose["services"]["mlflow"]["environment"][key]
        assert value.startswith("${" + key + ":?"), f"compose: {key} must come from .env, required"
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "pag-mlflow-admin", "key": key}


def test_server_image_carries_the_auth_config_and_runs_as_a_user():
    text = (MLFLOW_DIR / "Dockerfile").read_text()
    copied = re.search(r"^COPY infra/mlflow/basic_auth.ini (\S+)$", text, re.M)
    assert copied, "the image must carry infra/mlflow/basic_auth.ini"
    assert re.search(rf"^ENV MLFLOW_AUTH_CONFIG_PATH={re.escape(copied.group(1))}$", text, re.M)
    assert "!infra/mlflow/basic_auth.ini" in (MLFLOW_DIR / "Dockerfile.dockerignore").read_text().split()
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_server_containers_run_non_root_read_only_without_capabilities():
    compose = yaml.safe_load((MLFLOW_DIR / "docker-compose.yaml").read_text())["services"]["mlflow"]
    assert compose["user"].split(":")[0] not in ("root", "0")
    assert compose["read_only"] is True and "/tmp" in compose["tmpfs"]
    assert compose["cap_drop"] == ["ALL"] and "no-new-privileges:true" in compose["security_opt"]
    docs = k8s_docs()
    for kind, name in (("Deployment", "mlflow"), ("StatefulSet", "mlflow-postgres")):
        pod = docs[(kind, name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        (container,) = pod["containers"]
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name


@pytest.mark.slow
def test_authenticated_server_refuses_anonymous_clients_and_serves_its_users(s3_server, tmp_path, monkeypatch):  # noqa: F811
    """The compose file's server with its basic-auth config: /health is open, the API answers
    401 without or with wrong credentials; the admin (password from the environment) creates
    the pipeline's user, whose MLFLOW_TRACKING_USERNAME / _PASSWORD work, with nothing in the URI."""
    import urllib.error
    import urllib.request

    import mlflow
    from mlflow.tracking import MlflowClient

    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (mlflow[auth]), "
                        "which the server image installs and the dev venv may lack")
    admin_password = "adm1n-" + "x" * 12
    bucket = s3_server.make_bucket()
    server = start_s3_mlflow_server(tmp_path / "server", f"s3://{bucket}/mlflow", s3_server.env(), admin_password)
    try:
        with urllib.request.urlopen(f"{server.uri}/health", timeout=10) as resp:
            assert resp.status == 200
        search = f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1"
        for auth in (None, ("admin", "wrong")):
            request = urllib.request.Request(search)
            if auth:
                import base64

                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                request.add_header("Authorization", f"Basic {token}")
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=10)
            assert caught.value.code == 401, auth
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
        from mlflow.server import get_app_client

        get_app_client("basic-auth", tracking_uri=server.uri).create_user("pag-ray", "p1peline-" + "y" * 12)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "pag-ray")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "p1peline-" + "y" * 12)
        client = MlflowClient(server.uri)
        experiment = client.create_experiment("auth-roundtrip")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "semantic/miou", 0.5)
        assert client.get_run(run.info.run_id).data.metrics == {"semantic/miou": 0.5}
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
        with pytest.raises(mlflow.exceptions.MlflowException, match="401|nauthori|ermission"):
            MlflowClient(server.uri).get_run(run.info.run_id)
    finally:
        stop_mlflow_server(server)


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
