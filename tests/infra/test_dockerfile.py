"""infra/Dockerfile: its installs use the repo's exact pins, and it builds the CUDA extension
for sm_80 and sm_90 ahead of time.

There is no Docker engine on the development machine, so the image is not built here: these
tests read the Dockerfile's text (instructions joined over line continuations) and compare it
with constraints.txt, pyproject.toml and the installed torch.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
PINNED = ("torch", "torchvision", "ray", "mlflow", "timm", "numpy", "pyarrow", "boto3")


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def run_commands() -> list[str]:
    return [args for word, args in instructions() if word == "RUN"]


def pip_installs() -> list[str]:
    """Each `pip install ...` command inside the RUN instructions."""
    found = []
    for command in run_commands():
        for part in re.split(r"&&|;", command):
            if re.search(r"\bpip3?\s+install\b", part):
                found.append(part.strip())
    return found


def env() -> dict[str, str]:
    values = {}
    for word, args in instructions():
        if word == "ENV":
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                values[key] = value.strip('"')
    return values


def arg_defaults() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))


def test_every_pip_install_uses_the_constraints_file():
    installs = pip_installs()
    assert len(installs) >= 2, installs
    for command in installs:
        assert "-c constraints.txt" in command, f"unpinned install: {command}"
    copied = [args for word, args in instructions() if word == "COPY"]
    assert any(args.split()[0] == "constraints.txt" for args in copied)


def test_explicit_pins_in_the_dockerfile_equal_the_constraints():
    pins = constraints()
    for name in PINNED:
        assert canonical(name) in pins, f"{name} missing from constraints.txt"
    text = DOCKERFILE.read_text()
    explicit = re.findall(r"\b([A-Za-z0-9_.\-]+)==([0-9][^\s\"']*)", text)
    for name, version in explicit:
        assert pins.get(canonical(name)) == version, f"Dockerfile pins {name}=={version}, constraints say {pins.get(canonical(name))}"


def test_dependency_list_comes_from_pyproject_and_project_is_installed():
    runs = " ".join(run_commands())
    assert "tomllib.load(open('pyproject.toml'" in runs and "['project']['dependencies']" in runs
    assert re.search(r"pip install -c constraints.txt -e \.", runs)
    assert "pip check" in runs


def test_base_image_cuda_matches_torch_and_python_matches_the_pins():
    defaults = arg_defaults()
    cuda_image = defaults["CUDA_IMAGE"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-devel-ubuntu\d+\.\d+", cuda_image)
    assert match, f"{cuda_image}: expected a pinned nvidia/cuda devel tag (nvcc for the extension)"
    assert f"{match.group(1)}.{match.group(2)}" == torch.version.cuda
    assert torch.__version__.split("+")[0] == constraints()["torch"]
    # constraints.txt was frozen from this interpreter; the image uses the same minor version.
    assert defaults["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert re.fullmatch(r"ghcr.io/astral-sh/uv:\d+\.\d+\.\d+", defaults["UV_IMAGE"])
    for word, args in instructions():
        if word == "FROM":
            assert "latest" not in args, args


def test_cuda_extension_is_built_ahead_of_time_for_sm80_and_sm90():
    values = env()
    assert values["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0"
    assert values["PAG_EXTENSIONS_DIR"].startswith("/")
    assert values["CUDA_HOME"] == "/usr/local/cuda"
    runs = run_commands()
    build = [r for r in runs if "CUDA.load()" in r]
    assert build, "no RUN step builds the CUDA extension"
    assert "CPP.load()" in build[0]
    assert "cuobjdump --list-elf" in build[0]
    assert "grep -q sm_80" in build[0] and "grep -q sm_90" in build[0]
    # The AOT step must come after the project is installed.
    install_index = next(i for i, r in enumerate(runs) if "-e ." in r)
    assert runs.index(build[0]) > install_index


def test_copied_sources_exist_and_exclude_local_state():
    sources = []
    for word, args in instructions():
        if word == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    assert set(sources) == {"constraints.txt", "pyproject.toml", "README.md", "pag_model", "pipelines", "configs"}
    for source in sources:
        assert (ROOT / source).exists(), source
    ignored = (ROOT / "infra" / "Dockerfile.dockerignore").read_text().split()
    for heavy in (".git", ".venv", ".cache", "demo_out"):
        assert heavy in ignored, heavy


def runtime_user() -> tuple[str, int, str]:
    """(USER argument, its uid, its HOME) of the final image, from the Dockerfile's text."""
    users = [args for word, args in instructions() if word == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1]
    created = re.search(r"useradd [^&]*--uid (\d+)[^&]* (\w+)(?:\s|$)", " ".join(run_commands()))
    assert created, "no useradd with a fixed --uid"
    uid, name = int(created.group(1)), created.group(2)
    return user, uid, f"/home/{name}"


def test_the_image_runs_as_a_non_root_user_with_a_writable_home():
    user, uid, home = runtime_user()
    assert user.split(":")[0] in (str(uid), home.rsplit("/", 1)[1]) and uid != 0, user
    assert user.split(":")[0] not in ("root", "0")
    assert uid == 1000, "infra/kuberay/*.yaml run pods as uid 1000"
    # USER comes after every RUN: nothing later in the build switches back to root.
    words = [word for word, _ in instructions()]
    last_user = len(words) - 1 - words[::-1].index("USER")
    assert "RUN" not in words[last_user:], "a RUN after USER would run as the user, or USER came too early"
    values = env()
    assert values["HOME"] == home
    for cache in ("XDG_CACHE_HOME", "MPLCONFIGDIR", "TRITON_CACHE_DIR"):
        assert values[cache].startswith(home + "/"), f"{cache}={values[cache]} is not under HOME"
    chown = [r for r in run_commands() if "chown" in r]
    assert chown, "nothing is given to the runtime user"
    owned = re.search(r"chown -R (\S+) ([^&]+)", chown[0])
    assert owned.group(1).split(":")[0] == home.rsplit("/", 1)[1]
    targets = owned.group(2).split()
    assert home in targets and "${PAG_EXTENSIONS_DIR}" in targets, targets
    # The code and the venv stay root-owned (read-only to the user).
    assert not any(t.startswith(("/opt/venv", "/opt/pag-ray")) for t in targets), targets


def test_bytecode_is_compiled_at_build_for_a_read_only_root_filesystem():
    assert env()["PYTHONDONTWRITEBYTECODE"] == "1"
    runs = " ".join(run_commands())
    assert re.search(r"compileall -q /opt/pag-ray/pag_model /opt/pag-ray/pipelines", runs)
