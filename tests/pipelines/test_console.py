"""What a user sees: `pipelines/staged.py` run as a command, its stdout and stderr read whole.

A tiny two-stage pipeline with 2 train workers is stopped with Ctrl-C (SIGINT) after its first
checkpoint, then re-run with the same command. Both outputs must hold each progress report
once (from rank 0, not echoed, not per rank), none of Ray's own per-rank, per-epoch or
per-checkpoint lines, the re-run hint after Ctrl-C, and "resuming stage base from iteration N"
with N the checkpoint Ray Train registered (read from its own snapshot file).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.staged_data import DEMO, ROOT, make_shards, tiny_overrides

pytestmark = pytest.mark.slow

BASE_ITERS, RHO_ITERS, EVERY = 24, 8, 4
STAGES = (
    f"[{{name: base, iterations: {BASE_ITERS}, lr: 0.01}},"
    f" {{name: rho-0_5, iterations: {RHO_ITERS}, lr: 0.01, multipool: res5, gated: [res4, res5], rho: 0.5, lam: 0.002}}]"
)
PROGRESS = re.compile(r"^\[(?P<stage>[\w-]+)\] iteration (?P<it>\d+)/(?P<total>\d+)  loss \d+\.\d{4}")
# What Ray printed before: per-rank reports, per-epoch dataset plans, checkpoint notices,
# worker prefixes, and our own loop's tensor-to-float warning.
NOISE = (
    "Reporting training result",
    "Execution plan of Dataset",
    "Starting execution of Dataset",
    "Checkpoint successfully created",
    "RayTrainWorker",
    "SplitCoordinator",
    "TrainController",
    "UserWarning",
)


def _command(shards: Path, storage: Path) -> list[str]:
    overrides = tiny_overrides(shards, storage, STAGES, workers=2) + [
        "pipeline_id=console",
        f"train.log_every={EVERY}",
        f"train.checkpoint_every={EVERY}",
    ]
    cmd = [sys.executable, "pipelines/staged.py", "--config", str(DEMO.relative_to(ROOT))]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's packages, not an installed copy
    env.pop("RAY_ADDRESS", None)  # a private local Ray
    return env


def _progress(lines: list[str]) -> list[tuple[str, int]]:
    return [(m["stage"], int(m["it"])) for m in map(PROGRESS.match, lines) if m]


def _registered_iteration(run_dir: Path) -> int:
    """The iteration of the latest checkpoint Ray Train registered for the run (its snapshot)."""
    path = run_dir / "checkpoint_manager_snapshot.json"
    if not path.is_file():
        return 0
    latest = json.loads(path.read_text()).get("latest_checkpoint_result")
    return int(latest["metrics"]["iteration"]) if latest else 0


def _check_console(lines: list[str]) -> None:
    noisy = [line for line in lines if any(n in line for n in NOISE)]
    assert not noisy, noisy
    reports = _progress(lines)
    assert reports, lines
    assert all(n == 1 for n in Counter(reports).values()), [r for r, n in Counter(reports).items() if n > 1]
    assert sum("Ray's own logs" in line for line in lines) == 1, lines


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("data"), train=8, test=2, size=(48, 64))


def test_console_shows_each_report_once_and_resumes_after_ctrl_c(shards, tmp_path):
    cmd, env = _command(shards, tmp_path), _env()
    run_dir = tmp_path / "console" / "console-00-base"

    # First run: Ctrl-C once Ray Train has registered a checkpoint of the base stage.
    log = tmp_path / "first.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 400
        while proc.poll() is None and _registered_iteration(run_dir) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=300)
    first = log.read_text().splitlines()
    assert code == 130, first[-20:]
    assert any("re-run the same command to resume" in line for line in first), first[-20:]
    _check_console(first)
    resumed_at = _registered_iteration(run_dir)
    assert 0 < resumed_at < BASE_ITERS, resumed_at

    # Second run, the same command: the base stage resumes there, then the next stage runs.
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    second = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, second[-30:]
    _check_console(second)
    assert second.count(f"resuming stage base from iteration {resumed_at}") == 1, second
    expected = [("base", i) for i in range(resumed_at + 1, BASE_ITERS + 1) if i % EVERY == 0]
    expected += [("rho-0_5", i) for i in range(1, RHO_ITERS + 1) if i % EVERY == 0]
    assert _progress(second) == expected  # every report once, in order, none from before the resume
    # The bound: our own lines (the reports, the resumption, the log-dir line, two lines per
    # stage, the front table's header and two rows, the MLflow line) plus at most 5 lines of
    # Ray's and MLflow's driver-side logging (token-auth warning, "Started a local Ray
    # instance", MLflow's first-use table creation). Before, each report was printed twice,
    # and each epoch (3 lines) and each checkpoint (3 lines) added Ray's own.
    ours = len(expected) + 1 + 1 + 2 * 2 + 3 + 1
    assert len(second) <= ours + 5, second
