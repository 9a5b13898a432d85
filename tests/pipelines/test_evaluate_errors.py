"""`python -m pipelines.evaluate` with a wrong model URI, split or tracking URI: one line on
stderr, exit status 2, and no MLflow database created in the working directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.evaluate import main
from tests.support.staged_data import make_shards


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("data"), train=1, test=1, size=(16, 16))


@pytest.fixture
def store(tmp_path) -> str:
    """A real (empty) SQLite MLflow store with an experiment, outside the working directory."""
    from pipelines.tracking.tracker import Tracker

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    Tracker(uri, "exp")
    return uri


def _run(capsys, monkeypatch, cwd: Path, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(cwd)
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "model, tracking, expected",
    [
        ("models:/pag-demo@champion", None, "needs a tracking URI (--tracking-uri)"),
        ("models:/pag demo", "STORE", "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
        ("models:/pag-demo/latest", "STORE", "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
        ("models:/no-such-model@champion", "STORE", "not found in the registry"),
    ],
)
def test_bad_model_uri_is_one_line_exit_2_and_no_stray_database(
    model, tracking, expected, shard_dir, store, tmp_path, capsys, monkeypatch
):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["--model", model, "--data", str(shard_dir), "--out", str(tmp_path / "out")]
    if tracking:
        args += ["--tracking-uri", store]
    code, err = _run(capsys, monkeypatch, cwd, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert list(cwd.iterdir()) == []  # no ./mlflow.db, no ./mlruns


def test_missing_sqlite_store_is_not_created(shard_dir, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "typo" / "mlflow.db"
    code, err = _run(
        capsys, monkeypatch, tmp_path,
        "--model", "models:/m@champion", "--tracking-uri", f"sqlite:///{missing}",
        "--data", str(shard_dir), "--out", str(tmp_path / "out"),
    )
    assert code == 2 and f"no MLflow database at {missing}" in err and len(err.strip().splitlines()) == 1
    assert not missing.exists() and not (tmp_path / "mlflow.db").exists()


def test_bad_split_names_the_splits_before_reading_the_model(shard_dir, tmp_path, capsys, monkeypatch):
    code, err = _run(
        capsys, monkeypatch, tmp_path,
        "--model", str(tmp_path / "no-checkpoint-here"), "--data", str(shard_dir),
        "--split", "tset", "--out", str(tmp_path / "out"),
    )
    assert code == 2
    assert err.strip().splitlines() == [f"error: {shard_dir / 'manifest.json'}: no split 'tset'; manifest has ['test', 'train']"]


def test_unexpected_error_prints_redacted_chain_not_a_traceback(shard_dir, tmp_path, capsys, monkeypatch):
    import pipelines.evaluate as evaluate

    def explode(*_args, **_kwargs):
        try:
            raise ConnectionError("connect to http://u:sekrit-pass@mlflow:5000 refused")
        except ConnectionError as inner:
            raise RuntimeError("API request to http://u:sekrit-pass@mlflow:5000/api failed") from inner

    monkeypatch.setattr(evaluate, "load_model", explode)
    code, err = _run(
        capsys, monkeypatch, tmp_path,
        "--model", "models:/m@champion", "--tracking-uri", "http://u:sekrit-pass@mlflow:5000",
        "--data", str(shard_dir), "--out", str(tmp_path / "out"),
    )
    assert code == 1 and "sekrit-pass" not in err and "Traceback" not in err
    assert err.strip().splitlines()[0] == "error: RuntimeError: API request to http://u:***@mlflow:5000/api failed"
