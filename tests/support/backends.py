"""Kernel-backend fixtures shared by the perforated-inference tests.

Import both into a test module: every test runs the pure-PyTorch reference kernel (no C++
build in the quick suite) unless it takes the `backend` fixture, parametrised indirectly
over BACKENDS (the C++ kernel only in the slow suite).
"""
from __future__ import annotations

import pytest

from pag_model.ops import BACKEND_ENV

BACKENDS = ["reference", pytest.param("cpp", marks=pytest.mark.slow)]


@pytest.fixture(autouse=True)
def _reference_unless_parametrised(monkeypatch) -> None:
    """Quick tests never trigger the C++ build; the `backend` fixture overrides this."""
    monkeypatch.setenv(BACKEND_ENV, "reference")


@pytest.fixture
def backend(request, monkeypatch) -> str:
    monkeypatch.setenv(BACKEND_ENV, request.param)
    return request.param
