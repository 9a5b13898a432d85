"""Whole-model sparse inference: PAG-ResNet-50 (OS 8, 512x512) dense vs perforated.

Two models, each timed dense and perforated in one run (calls alternated, minimum of the
repeats kept, since noise on a shared machine only adds time):

  gated      PAGNet(resnet50, gated res3-res5, no MultiPool).
             dense      = gates "open", dense path: every 3x3 conv at every pixel.
             perforated = gates at density 0.5 (forced random masks, or a checkpoint's learned
                          gates), `to_perforated`: each gated 3x3 conv only at active pixels.
  multipool  the same plus MultiPool at Res5 (2048 channels, dilations 0,1,2,4,6,8,10).
             dense      = gates open, dense-masked MultiPool: all six conv branches everywhere.
             perforated = density-0.5 gates, each pixel computes only its selected branch.

Both runs use the channels-last model that `to_perforated` makes (converted once; the dense
run detaches the sparse modules, the perforated run reattaches them) with every remaining
BatchNorm folded into its conv (`fold_batchnorms`, as a deployed model runs; `--keep-bn`
keeps them: unfolded BN adds ~10% to both runs and so lowers the efficiency figure). `--precision`: fp32,
bf16 (a bfloat16 model and input) or autocast (fp32 model under torch.autocast("cpu", bf16)).

Beside the wall-clock ratio the script prints the multiply-add ratio of the work each run
actually does (pag_model.flops.count_macs, plus the unselected MultiPool branches that the
dense-masked run computes) and the saving efficiency (1 - wall ratio) / (1 - MAC ratio);
the target is >= 0.80 in fp32 and >= 0.85 in bf16. `--thresholds` also converts with per-layer
crossover densities measured on this machine (`calibrate_thresholds`) and times that model too.

    .venv/bin/python benchmarks/inference.py                      # both models, batch 1
    .venv/bin/python benchmarks/inference.py --precision bf16 --threads 1 --clock thread
    .venv/bin/python benchmarks/inference.py --models gated --repeats 5 --thresholds
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn


from pag_model import PAGNet, count_macs
from pag_model.flops import conv_macs_per_pixel
from pag_model.ops import choose_backend
from pag_model.sparse import (
    _attach_sparse,
    _detach_sparse,
    calibrate_thresholds,
    fold_batchnorms,
    from_perforated,
    to_perforated,
)
from pag_model.timing import interleaved_times


def build(kind: str, checkpoint: str | None) -> PAGNet:
    model = PAGNet(backbone="resnet50", tasks=("semantic",), num_classes=40,
                   multipool="res5" if kind == "multipool" else None, gated=("res3", "res4", "res5"))
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state))
    return model.eval()


def set_density(model: PAGNet, images: torch.Tensor, density: float | None, seed: int) -> None:
    """Fixed random masks of `density` per gate, or the learned gates when density is None."""
    if density is None:
        model.set_gate_mode("learned")
        return
    gen = torch.Generator().manual_seed(seed)
    size = images.shape[-1] // model.output_stride
    for _, gate in model.gates():
        gate.set_mode("fixed", (torch.rand(images.shape[0], size, size, generator=gen) < density).float())


def computed_macs(model: PAGNet, images: torch.Tensor, dense_masked: bool) -> float:
    """Multiply-adds per image of one forward; a dense-masked MultiPool computes every branch."""
    report = count_macs(model, images)
    macs = report.macs.mean().item()
    if dense_masked:
        for mp in model.multipools():
            sel = mp.last_selection
            hw = sel.shape[2] * sel.shape[3]
            for i, branch in enumerate(mp.branches):
                convs = [c for c in branch.modules() if isinstance(c, nn.Conv2d)]
                unselected = 1.0 - sel[:, i].gt(0).float().mean().item()
                macs += sum(conv_macs_per_pixel(c) for c in convs) * hw * unselected
    return macs


def best_times(runs: dict[str, callable], repeats: int, clock=time.perf_counter) -> dict[str, float]:
    """Minimum of `repeats` interleaved calls each, after one warm-up round (the C++ build on first use)."""
    return {name: min(times) for name, times in interleaved_times(runs, repeats, warmup=1, clock=clock).items()}


@torch.inference_mode()
def bench(kind: str, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = build(kind, args.checkpoint)
    images = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    density = None if args.checkpoint else args.density

    set_density(model, images, density, seed=1)
    to_perforated(model)  # channels-last; packs each layer's weight on its first call
    perf_macs = computed_macs(model, images, dense_masked=False)
    gate_density = sum(g.last_mask.mean().item() for _, g in model.gates()) / len(model.gates())
    sparse = _detach_sparse(model)
    model.set_gate_mode("open")
    dense_macs = computed_macs(model, images, dense_masked=kind == "multipool")

    def dense() -> None:
        _detach_sparse(model)
        model.set_gate_mode("open")
        model(images)

    def perforated() -> None:
        set_density(model, images, density, seed=1)
        _attach_sparse(sparse)
        model(images)

    runs = {"dense": dense, "perforated": perforated}
    if args.thresholds:
        start = time.perf_counter()
        set_density(model, images, density, seed=1)
        thresholds = calibrate_thresholds(model, images, repeats=2)
        print(f"  [{kind}] calibrated thresholds in {time.perf_counter() - start:.1f}s: "
              + ", ".join(f"{k.split('.', 1)[1]}={'never' if v is None else f'{v:.2f}'}" for k, v in thresholds.items()))
        _attach_sparse(sparse)
        from_perforated(model)
        to_perforated(model, thresholds)
        thresholded = _detach_sparse(model)

        def perforated_thresholds() -> None:
            set_density(model, images, density, seed=1)
            _attach_sparse(thresholded)
            model(images)

        runs["perforated+thresholds"] = perforated_thresholds
    if not args.keep_bn:  # inference as deployed: BN folded into the convs, for both runs
        fold_batchnorms(model)
    if args.precision == "bf16":
        model, images = model.to(torch.bfloat16), images.to(torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16, enabled=args.precision == "autocast"):
        times = best_times(runs, args.repeats, {"wall": time.perf_counter, "thread": time.thread_time, "process": time.process_time}[args.clock])
    mac_ratio = perf_macs / dense_macs
    goal = 0.80 if args.precision == "fp32" else 0.85
    for name, seconds in times.items():
        ratio = seconds / times["dense"]
        eff = (1 - ratio) / (1 - mac_ratio) if name != "dense" else float("nan")
        ok = "" if name == "dense" else ("yes" if eff >= goal else "NO")
        print(f"{kind:9} {name:22} {seconds * 1e3:9.1f} {ratio:6.3f} {mac_ratio if name != 'dense' else 1.0:7.3f} "
              f"{eff:6.2f}  {ok:3}  gate density {gate_density:.3f}, GMAC dense {dense_macs / 1e9:.1f} "
              f"perforated {perf_macs / 1e9:.1f}, target eff >= {goal}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gated", "multipool"], choices=["gated", "multipool"])
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--checkpoint", default=None, help="a trained PAGNet state dict (learned gates)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--thresholds", action="store_true", help="also time with calibrated per-layer thresholds")
    parser.add_argument("--keep-bn", action="store_true",
                        help="do not fold BatchNorm into the convs (both runs)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "autocast"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clock", default="wall", choices=["wall", "thread", "process"],
                        help="thread: this thread's CPU time (with --threads 1; immune to time slices "
                             "lost to other processes on a shared machine); process: all threads' CPU time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and torch.get_num_threads() != 1:
        parser.error("--clock thread measures one CPU thread: use it with --threads 1")
    load = os.getloadavg()[0]
    from perforated_conv import cpu_model  # the sibling benchmark script

    print(f"cpu={cpu_model()!r} precision={args.precision} clock={args.clock} load average={load:.1f} threads={torch.get_num_threads()} backend={choose_backend(torch.empty(0))} batch={args.batch} "
          f"size={args.size} repeats={args.repeats} (minimum kept) torch={torch.__version__}")
    print(f"{'model':9} {'run':22} {'ms':>9} {'wall':>6} {'MAC':>7} {'eff':>6}  ok")
    for kind in args.models:
        bench(kind, args)


if __name__ == "__main__":
    main()
