"""`make gpu-check`: everything that needs a GPU, in one run of under 8 minutes, one report.

Steps (each a subprocess with its own time limit inside one overall budget of 470 s; a step
that fails is reported and the next one still runs; a step that no longer fits is skipped):
    build      the cuda and cpp extensions (nvcc for this GPU's architecture) and triton
    tests      the cuda-marked tests (`pytest -m cuda tests`)
    data       generated NYUv2-format scenes as shards (8 train, 2 test, 48x64)
    pipeline   a two-stage tiny staged pipeline with scaling.use_gpu=true (Ray Train on the
               GPU, bf16 autocast)
    eval       the pipeline's last checkpoint, perforated (`to_perforated`) on the GPU, against
               its own dense-masked eval path, fp32 (asserted) and bf16 (reported)
    model      benchmarks/inference.py on the GPU, if it takes --device (else skipped, noted)
    layers     benchmarks/gpu_layers.py: triton and cuda backends vs cuDNN (own report); last,
               with what is left of the budget (it starts no new shape past its time limit)
Writes benchmarks/results/gpu_check.md (status, times and output tails of every step) and
benchmarks/results/gpu_layers.md; full logs go to .cache/gpu_check/. Exit status 0 when
every step passed, 1 when one failed or was skipped, 2 when there is no GPU (checked first,
in seconds). `--dry-run` prints the plan without running anything.

    .venv/bin/python benchmarks/gpu_check.py [--dry-run] [--budget 470]
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LOGS = ROOT / ".cache" / "gpu_check"
BUDGET_S = 470  # under 8 minutes, with room for start-up and the report
LAYERS_LIMIT = "<what is left>"  # replaced at run time by the seconds left minus a margin
TWO_STAGES = (
    "[{name: base, iterations: 4, lr: 0.01},"
    " {name: rho-0_5, iterations: 4, lr: 0.01, multipool: res5, gated: [res4, res5], rho: 0.5, lam: 0.002}]"
)

BUILD = (
    "from pag_model.ops import backends; "
    "backends.CUDA.load(); print('cuda extension:', backends.CUDA.load().__file__); "
    "backends.CPP.load(); print('cpp extension:', backends.CPP.load().__file__); "
    "import triton; backends.triton_kernels(); print('triton', triton.__version__)"
)

DATA = (
    "import sys; from pathlib import Path; from pipelines.demo import prepare_data; "
    "prepare_data(Path(sys.argv[1]), scenes={'train': 8, 'test': 2}, size=(48, 64))"
)

EVAL = '''
import sys, torch
from pipelines.config import load_config
from pipelines.evaluate import load_model
from pipelines.stages import read_record
from pag_model.ops import choose_backend
from pag_model.sparse import to_perforated
config = load_config(sys.argv[1], sys.argv[2:])
record = read_record(config, config.stages[-1])
assert record is not None, f"no record of stage {config.stages[-1].name}: did the pipeline finish?"
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
images = torch.randn(2, 3, 64, 64, device="cuda")
for dtype in (torch.float32, torch.bfloat16):
    for gates in ("learned", "fixed 0.5"):
        net = load_model(record.checkpoint).cuda().to(dtype).to(memory_format=torch.channels_last)
        x = images.to(dtype).contiguous(memory_format=torch.channels_last)
        if gates != "learned":  # a few training steps leave the learned gates all on
            side = x.shape[-1] // net.output_stride
            for _, gate in net.gates():
                gate.set_mode("fixed", (torch.rand(x.shape[0], side, side, device="cuda") < 0.5).float())
        with torch.no_grad():
            dense = net(x)
            names = to_perforated(net)
            sparse = net(x)
        densities = [round(g.last_mask.float().mean().item(), 3) for _, g in net.gates()]
        for task in dense:
            ref = dense[task].float()
            err = ((sparse[task].float() - ref).abs().max() / ref.abs().max()).item()
            print(f"{dtype} gates {gates} {task}: perforated vs dense-masked relative max error {err:.2e}; "
                  f"backend {choose_backend(x)}; {len(names)} perforated layers; gate densities {densities}")
            # bf16 with learned gates: a rounding difference can flip a later gate, so report only.
            limit = 1e-3 if dtype == torch.float32 else (5e-2 if gates != "learned" else None)
            assert limit is None or err < limit, f"{dtype} {gates} {task}: relative error {err:.2e} > {limit}"
print("ok")
'''


@dataclass
class Step:
    """One subprocess of the check; `status` is filled in by `run`."""

    name: str
    argv: list[str]
    timeout_s: int
    env: dict[str, str] = field(default_factory=dict)
    status: str = "not run"
    seconds: float = 0.0
    tail: str = ""
    note: str = ""


def run(step: Step, deadline: float) -> None:
    """Run one step within its timeout and the overall deadline; log to .cache/gpu_check/<name>.log."""
    left = deadline - time.monotonic()
    if left < 20:
        step.status = "SKIPPED (out of time)"
        return
    timeout = min(step.timeout_s, int(left))
    if LAYERS_LIMIT in step.argv:  # the layer benchmark starts no new shape after this
        step.argv[step.argv.index(LAYERS_LIMIT)] = str(max(10, timeout - 45))
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{step.name}.log"
    print(f"[gpu-check] {step.name}: {' '.join(step.argv)[:200]} (limit {timeout}s)", flush=True)
    start = time.monotonic()
    with open(log, "w") as out:
        try:
            done = subprocess.run(step.argv, cwd=ROOT, env={**os.environ, **step.env}, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout)
            step.status = "passed" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            step.status = f"FAILED (timed out after {timeout}s)"
    step.seconds = time.monotonic() - start
    lines = log.read_text(errors="replace").splitlines()
    step.tail = "\n".join(lines[-40:])
    print(f"[gpu-check] {step.name}: {step.status} in {step.seconds:.0f}s (log {log})", flush=True)


def plan(python: str, workdir: Path) -> list[Step]:
    """The steps, in order, for this interpreter and scratch directory."""
    storage = workdir / "runs"
    shards = workdir / "shards" / "nyuv2"
    overrides = [
        f"data.uri={shards}", f"storage_path={storage}", "data.crop=[32, 32]", "data.eval_images=2",
        "model.head_channels=8", "train.batch_size=2", "train.log_every=1", "train.checkpoint_every=2",
        "train.bf16=true", "scaling.num_workers=1", "scaling.use_gpu=true", "pipeline_id=gpucheck",
        f"stages={TWO_STAGES}",
    ]
    sets = [arg for o in overrides for arg in ("--set", o)]
    inference = ROOT / "benchmarks" / "inference.py"
    if "--device" in inference.read_text():
        model = Step("model", [python, str(inference), "--device", "cuda", "--repeats", "3"], 90)
    else:
        model = Step("model", [], 0, status="SKIPPED",
                     note="benchmarks/inference.py has no --device option yet; it times CPU only")
    return [
        Step("build", [python, "-c", BUILD], 150),
        Step("tests", [python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"], 150),
        Step("data", [python, "-c", DATA, str(workdir)], 60),
        Step("pipeline", [python, "pipelines/staged.py", "--config", "configs/demo.yaml", *sets], 150),
        Step("eval", [python, "-c", EVAL, "configs/demo.yaml", *overrides], 60),
        model,
        # Last, with what is left of the budget: it writes its report after every shape.
        Step("layers", [python, "benchmarks/gpu_layers.py", "--out", str(RESULTS / "gpu_layers.md"),
                        "--time-limit", LAYERS_LIMIT], 300),
    ]


def gpu_summary() -> tuple[bool, str, str]:
    """(GPU present, one-line description, TORCH_CUDA_ARCH_LIST for it)."""
    import torch

    if not torch.cuda.is_available():
        return False, "no GPU", ""
    major, minor = torch.cuda.get_device_capability(0)
    props = torch.cuda.get_device_properties(0)
    text = (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{major}{minor}, {props.multi_processor_count} SMs; "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    return True, text, f"{major}.{minor}"


def report(steps: Sequence[Step], device: str, total_s: float) -> str:
    lines = [
        "# make gpu-check",
        "",
        f"- device: {device}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; total {total_s:.0f}s "
        f"(budget {BUDGET_S}s)",
        "",
        "| step | status | seconds | note |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.0f} | {s.note} |" for s in steps]
    layers = RESULTS / "gpu_layers.md"
    if layers.is_file():
        lines += ["", f"Layer benchmark: see [{layers.name}]({layers.name})."]
    for s in steps:
        if s.tail:
            lines += ["", f"## {s.name}: {s.status}", "", "```", s.tail, "```"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the steps and exit")
    parser.add_argument("--budget", type=int, default=BUDGET_S, help="seconds for all steps together")
    args = parser.parse_args(argv)
    start = time.monotonic()
    python = sys.executable
    if args.dry_run:
        for step in plan(python, Path(tempfile.gettempdir()) / "pag-gpu-check"):
            shown = shlex.join(step.argv).replace("\n", "; ") if step.argv else step.note
            print(f"{step.name:<9} limit {step.timeout_s:>3}s  {shown}")
        return 0
    present, device, arch = gpu_summary()
    if not present:
        print("gpu_check: no GPU found (torch.cuda.is_available() is False); nothing was run", file=sys.stderr)
        return 2
    print(f"[gpu-check] {device}", flush=True)
    # Every step builds (or finds built) the cuda extension for this GPU only: one nvcc pass,
    # and the same flags in every step, so no step rebuilds what the build step built.
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch
    deadline = start + args.budget
    with tempfile.TemporaryDirectory(prefix="pag-gpu-check-") as tmp:
        steps = plan(python, Path(tmp))
        for step in steps:
            needs = {"pipeline": "data", "eval": "pipeline"}.get(step.name)
            if needs and next(s for s in steps if s.name == needs).status != "passed":
                step.status, step.note = "SKIPPED", f"needs the {needs} step"
                continue
            if step.argv:
                run(step, deadline)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "gpu_check.md"
    out.write_text(report(steps, device, time.monotonic() - start))
    print(f"[gpu-check] report written to {out}")
    failed = [s.name for s in steps if s.status != "passed" and not (s.name == "model" and s.argv == [])]
    if failed:
        print(f"[gpu-check] not passed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
