"""The GPU check script and GPU layer benchmark, as far as a machine without a GPU can check them:
no GPU -> a clear message and exit 2 within seconds; the plan lists every step; the layer
benchmark's report is complete on a tiny layer run through Triton's interpreter."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_check_without_gpu_stops_quickly(tmp_path) -> None:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no GPU found" in done.stderr
    assert time.monotonic() - start < 60


def test_gpu_check_plan_lists_every_step() -> None:
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    names = [line.split()[0] for line in done.stdout.splitlines() if line and not line.startswith(" ")]
    assert names == ["build", "tests", "data", "pipeline", "eval", "model", "layers"]
    assert "scaling.use_gpu=true" in done.stdout and "-m cuda" in done.stdout


def test_gpu_layers_smoke_report(tmp_path) -> None:
    pytest.importorskip("triton")
    out = tmp_path / "layers.md"
    subprocess.run([sys.executable, "benchmarks/gpu_layers.py", "--smoke", "--out", str(out)], cwd=REPO,
                   capture_output=True, text=True, timeout=300, check=True)
    text = out.read_text()
    assert "SMOKE RUN" in text
    rows = [line for line in text.splitlines() if line.startswith("| tf32 | smoke |")]
    assert [row.split("|")[5].strip() for row in rows] == ["0.50", "1.00"]
    assert all(len(row.split("|")) == 12 for row in rows)  # dense, mm, triton, reference, kernel
