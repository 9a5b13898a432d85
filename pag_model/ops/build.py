"""Build-on-first-use for the C++ and CUDA kernels of the perforated convolution.

Nothing is compiled at import. `CompiledExtension.load()` compiles the sources with ninja
through `torch.utils.cpp_extension.load` into a cache directory and imports the result,
once per process. Concurrency: threads of one process serialise on a lock here; processes
(pytest workers, Ray workers) serialise on the OS-level file lock that torch's `load` holds
in the build directory while it builds (released by the kernel if a builder dies), and the
second process finds ninja's outputs up to date. A failed build is remembered with its
message so `available()` stays cheap and a forced backend can say why it is missing.

Cache directory, first that is set:
    PAG_EXTENSIONS_DIR, TORCH_EXTENSIONS_DIR, <repo>/.cache/torch_extensions (a source
    checkout; git ignores .cache/), else torch's default (~/.cache/torch_extensions).
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from types import ModuleType
from typing import Optional, Sequence

CSRC = Path(__file__).resolve().parent / "csrc"
DEFAULT_CUDA_ARCHS = "8.0;9.0"  # Ampere and Hopper, used when no GPU is present to detect


class ExtensionUnavailable(RuntimeError):
    """A compiled backend could not be built or loaded on this machine."""


def extensions_root() -> Optional[Path]:
    """The directory that holds one build folder per extension, or None for torch's default."""
    for var in ("PAG_EXTENSIONS_DIR", "TORCH_EXTENSIONS_DIR"):
        value = os.environ.get(var)
        if value:
            return Path(value)
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "pag_model").is_dir():
        return repo / ".cache" / "torch_extensions"
    return None


def cuda_home() -> Optional[str]:
    """CUDA toolkit root: $CUDA_HOME / $CUDA_PATH, else /usr/local/cuda, else where nvcc lives.

    torch guesses CUDA_HOME from `which nvcc`, which is wrong when nvcc is a wrapper script
    outside the toolkit (as /usr/local/bin/nvcc is here), hence this lookup.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value and Path(value, "bin", "nvcc").exists():
            return value
    if Path("/usr/local/cuda/bin/nvcc").exists():
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    return str(Path(nvcc).resolve().parents[1]) if nvcc else None


class CompiledExtension:
    """One torch C++/CUDA extension, built and imported on first `load()`.

    Args:
        name: Python module name of the extension (also its build folder's name).
        sources: file names inside `pag_model/ops/csrc`.
        cuda: compile .cu sources with nvcc and link against torch's CUDA libraries.
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[str],
        cuda: bool,
    ) -> None:
        self.name = name
        self.sources = [str(CSRC / s) for s in sources]
        self.cuda = cuda
        self._lock = threading.Lock()
        self._module: Optional[ModuleType] = None
        self._error: Optional[str] = None

    def available(self) -> bool:
        """True when the extension builds (or is cached) and imports; builds on first call."""
        try:
            self.load()
        except ExtensionUnavailable:
            return False
        return True

    def reason(self) -> str:
        """Why the last `load()` failed ('' if it did not)."""
        return self._error or ""

    def load(self) -> ModuleType:
        """Build if needed and import; raises ExtensionUnavailable with the build's message."""
        with self._lock:
            if self._module is not None:
                return self._module
            if self._error is not None:
                raise ExtensionUnavailable(self._error)
            try:
                self._module = self._build()
            except Exception as exc:  # compiler missing, compile error, bad toolkit, ...
                self._error = f"building extension {self.name!r} from {self.sources} failed: {exc}"
                raise ExtensionUnavailable(self._error) from exc
            return self._module

    def _build(self) -> ModuleType:
        for src in self.sources:
            if not Path(src).is_file():
                raise FileNotFoundError(f"extension source {src} is missing")
        home = cuda_home()
        if home is not None and "CUDA_HOME" not in os.environ:
            os.environ["CUDA_HOME"] = home  # torch reads it when cpp_extension is imported
        from torch.utils import cpp_extension

        if self.cuda:
            if home is None:
                raise RuntimeError("no CUDA toolkit found (set CUDA_HOME to the toolkit root)")
            cpp_extension.CUDA_HOME = home  # in case cpp_extension was imported before
            if "TORCH_CUDA_ARCH_LIST" not in os.environ:
                import torch

                if not torch.cuda.is_available():
                    os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        root = extensions_root()
        build_dir = None
        if root is not None:
            build_dir = root / self.name
            build_dir.mkdir(parents=True, exist_ok=True)
        return cpp_extension.load(
            name=self.name,
            sources=self.sources,
            # -fopenmp: at::parallel_for is an inline OpenMP region in torch's headers; without
            # the flag it silently runs serially in the extension (torch's libgomp is reused).
            extra_cflags=["-O3"] + ([] if self.cuda else ["-fopenmp"]),
            extra_ldflags=None if self.cuda else ["-fopenmp"],
            extra_cuda_cflags=["-O3"] if self.cuda else None,
            build_directory=str(build_dir) if build_dir is not None else None,
            with_cuda=self.cuda,
            verbose=False,
        )
