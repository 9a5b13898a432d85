"""pipelines.tracking.redaction: credentials are masked in dicts, flattened params and free text.

Expected outputs are written out by hand; each case names the kind of secret it covers.
"""
from __future__ import annotations

import pytest

from pipelines.tracking.redaction import MASK, env_secrets, is_secret_key, redact, redact_text


@pytest.mark.parametrize(
    "key",
    [
        "password", "db_password", "AWS_SECRET_ACCESS_KEY", "aws_access_key_id", "awsSecretAccessKey",
        "MLFLOW_TRACKING_TOKEN", "RAY_AUTH_TOKEN", "api_key", "apikey", "client_secret",
        "Authorization", "storage.credentials.region", "X-Amz-Signature", "private_key",
    ],
)
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "tracking_uri", "storage_path", "RAY_AUTH_TOKEN_PATH", "secret_name", "RAY_AUTH_MODE",
        "s3_key", "num_workers", "tokenizer", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "keyword",
    ],
)
def test_keys_that_only_name_a_place_or_setting_are_kept(key):
    assert not is_secret_key(key)


def test_nested_config_values_under_secret_keys_are_masked():
    config = {
        "tracking": {"tracking_uri": "http://mlflow:5000", "password": "hunter2"},
        "storage": {"aws_secret_access_key": "abc/def", "region": "us-east-1"},
        "credentials": {"user": "bob", "key": 17, "enabled": True},
        "stages": [{"name": "base", "api_token": "t0k", "lr": 0.1}],
        "token": None,
        "count": 3,
    }
    assert redact(config) == {
        "tracking": {"tracking_uri": "http://mlflow:5000", "password": MASK},
        "storage": {"aws_secret_access_key": MASK, "region": "us-east-1"},
        "credentials": {"user": MASK, "key": MASK, "enabled": True},
        "stages": [{"name": "base", "api_token": MASK, "lr": 0.1}],
        "token": None,
        "count": 3,
    }
    # The input is not modified.
    assert config["tracking"]["password"] == "hunter2"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("postgresql://mlflow:pg-pass-1@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        ("s3://minio:minio123@store.local/bucket/x", "s3://minio:***@store.local/bucket/x"),
        ("http://user@host:5000/path", "http://user@host:5000/path"),
        ("http://127.0.0.1:5000/api", "http://127.0.0.1:5000/api"),
        ("key id AKIAIOSFODNN7EXAMPLE in a log", "key id *** in a log"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY=***"),
        ('{"password": "a b c", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ("db_password: 'x y'\nport: 5432", "db_password: '***'\nport: 5432"),
        ("http://h/o?X-Amz-Signature=abcd1234&x=1", "http://h/o?X-Amz-Signature=***&x=1"),
        ("Authorization: Bearer abcdefghijkl", "Authorization: *** ***"),
        ("header bearer abcdefghijkl end", "header bearer *** end"),
        ("RAY_AUTH_TOKEN_PATH=/tmp/auth_token", "RAY_AUTH_TOKEN_PATH=/tmp/auth_token"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY-----",
            "***",
        ),
    ],
)
def test_text_patterns(text, expected):
    assert redact_text(text) == expected


def test_environment_secret_is_masked_wherever_it_appears(monkeypatch):
    planted = "pl4nted-Secret-Value-91"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", planted)
    monkeypatch.setenv("SOME_PATH", "/not/a/secret/at/all")
    assert planted in env_secrets()
    assert "/not/a/secret/at/all" not in env_secrets()
    config = {"note": f"endpoint used {planted} by mistake", "list": [planted, "ok"]}
    assert redact(config) == {"note": "endpoint used *** by mistake", "list": [MASK, "ok"]}
    assert redact_text(f"--set x={planted}") == "--set x=***"


def test_short_environment_values_are_not_replaced_literally(monkeypatch):
    # A 4-character "secret" would otherwise mask every occurrence of a common substring.
    monkeypatch.setenv("MY_TOKEN", "demo")
    assert redact_text("demo config") == "demo config"


def test_extra_secrets_and_tuples():
    assert redact(("a-known-secret", 1), extra_secrets=["a-known-secret"]) == (MASK, 1)


def test_working_directory_is_not_a_secret(monkeypatch, tmp_path):
    # The shell's PWD ("pwd" reads like "password") made every logged path `***/demo_out/...`.
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.setenv("PWD", str(work))
    monkeypatch.setenv("OLDPWD", str(tmp_path))
    path = f"{work}/demo_out/shards/nyuv2"
    assert redact_text(path) == path
    assert redact({"data": {"uri": path}}) == {"data": {"uri": path}}


def test_a_path_to_a_credentials_file_is_kept_but_a_secret_value_is_not(monkeypatch, tmp_path):
    key_file = tmp_path / "service-account.json"
    key_file.write_text("{}")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("DB_PWD", "s3cr3t-db-passw0rd")
    assert redact_text(f"creds at {key_file}") == f"creds at {key_file}"
    assert redact_text("connect with s3cr3t-db-passw0rd") == "connect with ***"


def test_describe_error_redacts_every_exception_of_the_chain():
    from pipelines.tracking.redaction import describe_error

    uri = "http://alice:hunter2-pw@mlflow.internal:5000"
    try:
        try:
            raise ConnectionError(f"Max retries exceeded with url: {uri}/api/2.0/mlflow/experiments/get")
        except ConnectionError as inner:
            raise RuntimeError(f"API request to {uri} failed") from inner
    except RuntimeError as outer:
        text = describe_error(outer)
    assert "hunter2-pw" not in text
    assert text.splitlines() == [
        "RuntimeError: API request to http://alice:***@mlflow.internal:5000 failed",
        "  caused by ConnectionError: Max retries exceeded with url: "
        "http://alice:***@mlflow.internal:5000/api/2.0/mlflow/experiments/get",
    ]


def test_environment_is_read_safely_while_another_thread_changes_it():
    """MLflow's telemetry thread sets and unsets variables while a run starts; reading the
    secrets from the environment must not fail with KeyError (it did, once, in the demo)."""
    import os
    import threading

    from pipelines.tracking.redaction import env_secrets

    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            os.environ[f"_CHURN_{i % 50}"] = "x"
            os.environ.pop(f"_CHURN_{(i + 25) % 50}", None)
            i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(3000):
            env_secrets()
    finally:
        stop.set()
        thread.join()
        for i in range(50):
            os.environ.pop(f"_CHURN_{i}", None)
