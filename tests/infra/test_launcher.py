"""ray_cluster.yaml: valid for Ray's own launcher schema, and the cluster the issue asks for.

Schema: the file goes through the same two steps `ray up` applies before touching AWS,
`prepare_config` (merge with ray/autoscaler/aws/defaults.yaml) and `validate_config`
(jsonschema against ray/autoscaler/ray-schema.json shipped with ray). The cloud calls that
follow in `ray up` (IAM, subnets, security groups) cannot run here.
"""
from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "ray_cluster.yaml"

# GPUs per instance, from the AWS instance type pages (written out, not looked up by code).
GPUS_PER_INSTANCE = {"g6e.12xlarge": 4, "g5.12xlarge": 4, "p4d.24xlarge": 8, "p5.48xlarge": 8}
CPU_INSTANCE_PREFIXES = ("m5.", "m6i.", "m7i.", "c6i.", "c7i.", "r6i.")


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_validates_against_rays_schema(cluster):
    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_schema_check_is_live(cluster):
    # The same validation rejects a broken copy: a string GPU count and an unknown key.
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu4_spot"]["resources"] = {"GPU": "4"}
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    broken = copy.deepcopy(cluster)
    broken["idle_timeout_minute"] = 5
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_cpu_head_and_4_and_8_gpu_worker_types(cluster):
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["node_config"]["InstanceType"].startswith(CPU_INSTANCE_PREFIXES)
    assert head["resources"] == {"CPU": 0}, "the head should not take training or data tasks"
    workers = {name: t for name, t in types.items() if name != cluster["head_node_type"]}
    gpus = {name: GPUS_PER_INSTANCE[t["node_config"]["InstanceType"]] for name, t in workers.items()}
    assert 4 in gpus.values() and 8 in gpus.values(), gpus
    spot = [n for n, t in workers.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"]
    assert spot, "at least one spot GPU node type"


def test_cost_controls(cluster):
    assert 1 <= cluster["idle_timeout_minutes"] <= 30
    assert cluster["provider"]["cache_stopped_nodes"] is False
    workers = {n: t for n, t in cluster["available_node_types"].items() if n != cluster["head_node_type"]}
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0, f"{name}: GPU nodes must scale to zero"
        assert 1 <= node_type["max_workers"] <= cluster["max_workers"], name
    assert cluster["max_workers"] <= sum(t["max_workers"] for t in workers.values())
    assert cluster["max_workers"] <= 8


def test_no_credentials_in_file(cluster):
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text)
    lowered = text.lower()
    for word in ("aws_secret_access_key", "aws_access_key_id", "aws_session_token", "password"):
        assert word not in lowered, word
    for name, node_type in cluster["available_node_types"].items():
        assert "IamInstanceProfile" in node_type["node_config"], f"{name}: S3 through an instance profile"
        assert "UserData" not in node_type["node_config"], name
    # The only file mounts are the Ray token and MLflow's credentials file, copied from the
    # user's machine, never inlined, into the HOME of the image's non-root user (root's home
    # is closed to it); MLflow clients read ~/.mlflow/credentials themselves.
    from tests.infra.test_dockerfile import env

    home = env()["HOME"]
    assert home != "/root"
    assert cluster["file_mounts"] == {
        f"{home}/.ray/auth_token": "~/.ray/auth_token",
        f"{home}/.mlflow/credentials": "~/.mlflow/credentials",
    }
    assert f"--env RAY_AUTH_TOKEN_PATH={home}/.ray/auth_token" in cluster["docker"]["run_options"]


def test_dashboard_is_not_exposed(cluster):
    head_start = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    everything = yaml.safe_dump(cluster)
    assert "0.0.0.0" not in everything
    run_options = " ".join(cluster["docker"].get("run_options", []))
    assert not re.search(r"(-p|--publish)[ =]", run_options), "no published container ports"
    for node_type in cluster["available_node_types"].values():
        assert "SecurityGroupIds" not in node_type["node_config"], "Ray's default group opens only SSH"
    token_env = cluster["docker"]["run_options"]
    assert "--env RAY_AUTH_MODE=token" in token_env


def test_project_installed_at_pinned_version(cluster):
    version = project_version()
    image = cluster["docker"]["image"]
    assert image.rsplit(":", 1)[1] == version, f"image tag of {image} must be the project version {version}"
    assert cluster["docker"]["pull_before_run"] is True
    setup = " ".join(cluster["setup_commands"])
    assert "m.version('pag-ray')" in setup and f"'{version}'" in setup
