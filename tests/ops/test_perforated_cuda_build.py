"""The CUDA perforated kernel: it compiles and links here (no GPU needed), and on a GPU it
matches the dense F.conv2d-then-mask definition (cuda-marked; skipped without a GPU).
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pag_model.ops import BACKEND_ENV, choose_backend, perforated_conv2d
from pag_model.ops.build import cuda_home
from tests.support.perforated import dense_then_mask, layout, make_mask

REPO = Path(__file__).resolve().parents[2]
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_cuda_extension_compiles_links_and_imports(tmp_path) -> None:
    """A fresh build with nvcc for sm_80 and sm_90 into an empty cache, imported in a new process.

    About 40 s of CPU time (device code is kept free of torch headers); minutes of wall time
    on a loaded machine, hence the long timeout.
    """
    assert cuda_home() is not None, "no CUDA toolkit (nvcc) found: set CUDA_HOME"
    code = (
        "from pag_model.ops import backends; m = backends.CUDA.load();"
        "print('doc:', m.perforated_conv2d_.__doc__.splitlines()[-1]); print('file:', m.__file__)"
    )
    env = dict(os.environ, PAG_EXTENSIONS_DIR=str(tmp_path / "ext"))
    env.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=2300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "written in place into out (CUDA)" in done.stdout
    build_dir = tmp_path / "ext" / "pag_perforated_cuda"
    so_files = list(build_dir.glob("*.so"))
    assert so_files, f"no shared library in {build_dir}"
    ninja = (build_dir / "build.ninja").read_text()
    assert "arch=compute_80,code=sm_80" in ninja and "arch=compute_90,code=sm_90" in ninja
    linked = subprocess.run(["ldd", str(so_files[0])], capture_output=True, text=True).stdout
    assert "libcudart" in linked, linked


def test_cuda_forced_without_gpu_tensor_raises(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(RuntimeError, match="cuda backend runs on CUDA tensors"):
        perforated_conv2d(x, torch.randn(3, 2, 3, 3), torch.ones(1, 4, 4, dtype=torch.bool))


@pytest.fixture
def no_tf32():
    """Full fp32 for both the dense oracle (cuDNN) and the kernel's GEMM (cuBLAS)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.cuda
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dilation", [1, 2, 4, 10])
def test_cuda_matches_dense_then_mask(monkeypatch, no_tf32, dilation: int, k: int, density: float) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    cases = itertools.product([1, 3], ["contiguous", "strided", "channels_last"],
                              [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                              [False, True])
    for batch, kind, dtype, with_fill in cases:
        x = layout(torch.randn(batch, 8, 13, 11, device="cuda", dtype=dtype), kind)
        weight = torch.randn(6, 8, k, k, device="cuda", dtype=dtype) * 0.2
        mask = make_mask(batch, 13, 11, density, device="cuda")
        bias = torch.randn(6, device="cuda", dtype=dtype) if with_fill else None
        fill = torch.randn(batch, 6, 13, 11, device="cuda", dtype=dtype) if with_fill else None
        assert choose_backend(x) == "cuda"
        got = perforated_conv2d(x, weight, mask, bias=bias, dilation=dilation, fill=fill, relu=with_fill)
        # Oracle in float64 from the same (rounded) inputs: the kernel accumulates in fp32.
        up = lambda t: None if t is None else t.double()  # noqa: E731
        expected = dense_then_mask(up(x), up(weight), mask, up(bias), dilation, up(fill), with_fill)
        msg = f"B={batch} layout={kind} dtype={dtype} fill={with_fill}"
        torch.testing.assert_close(got.double(), expected, **TOL[dtype], msg=lambda m: f"{msg}: {m}")


@pytest.mark.cuda
def test_cuda_gradcheck_float64(monkeypatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    opts = dict(device="cuda", dtype=torch.float64, requires_grad=True)
    x, weight = torch.randn(2, 3, 5, 6, **opts), torch.randn(4, 3, 3, 3, **opts)
    mask = make_mask(2, 5, 6, 0.5, device="cuda")
    assert torch.autograd.gradcheck(
        lambda x, w: perforated_conv2d(x, w, mask, dilation=2, relu=True), (x, weight)
    )


@pytest.mark.cuda
def test_cuda_large_layer_in_chunks(monkeypatch, no_tf32) -> None:
    """A Res5-sized layer (more rows than one gather chunk) against the dense definition."""
    monkeypatch.setenv(BACKEND_ENV, "cuda")
    x = torch.randn(4, 512, 64, 64, device="cuda")
    weight = torch.randn(512, 512, 3, 3, device="cuda") * 0.02
    mask = make_mask(4, 64, 64, 0.95, device="cuda")  # 15565 rows: two gather chunks
    got = perforated_conv2d(x, weight, mask, dilation=4, fill=x, relu=True)
    torch.testing.assert_close(got, dense_then_mask(x, weight, mask, None, 4, x, True), rtol=1e-4, atol=1e-4)
