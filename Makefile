# The README's commands. Every target creates or reuses the virtual environment in .venv/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Re-install only when the pins or the package metadata change.
STAMP := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | sha1sum | cut -c1-12)
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda /usr/local/cuda-13.0))
export CUDA_HOME
# Build the CUDA extension for Ampere and Hopper when no GPU is present to detect.
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
export TORCH_CUDA_ARCH_LIST
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-quick bench gpu-check clean-venv

setup: $(STAMP)

$(STAMP): constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade -c constraints.txt pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: setup
	$(PY) -m pipelines.demo

test: setup
	$(PY) -m pytest -q --durations=30 tests

test-quick: setup
	$(PY) -m pytest -q -m "not slow" tests

bench: setup
	$(PY) benchmarks/perforated_conv.py
	$(PY) benchmarks/inference.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/train_overhead.py

# On a machine with a GPU, in under 8 minutes: build the kernels, the cuda-marked tests, the GPU
# layer benchmark, the model benchmark and a two-stage staged pipeline on the GPU; writes
# benchmarks/results/gpu_check.md. Without a GPU it says so and stops (exit 2).
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

clean-venv:
	rm -rf $(VENV)
