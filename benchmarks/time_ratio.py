"""Time ratio (perforated / gate-free dense, `pag_model.timing.measure_time_ratio`) vs MAC ratio.

The demo's network (resnet_demo, gates in Res3-Res5: 9 gated blocks, bilinear head), random
init, 96x128 images, for three gate settings: Res5 closed (Res3-Res4 open), a random 50% pixel
mask on every gated block ("fixed"), all open. MAC ratio = `count_macs(...).ratio` (gated 3x3
convs at their active pixels over all of them at every pixel). Efficiency = (1 - time ratio) /
(1 - MAC ratio): the share of the saved multiply-adds that comes back as time.

    .venv/bin/python benchmarks/time_ratio.py                                   # wall clock, torch's threads
    .venv/bin/python benchmarks/time_ratio.py --threads 1 --clock thread        # one thread's CPU time
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from pag_model import PAGNet, count_macs
from pag_model.timing import measure_time_ratio

SETTINGS = ("res5_closed", "random_half", "open")


def demo_net() -> PAGNet:
    return PAGNet(backbone="resnet_demo", tasks=("semantic",), num_classes=40, multipool=None,
                  gated=("res3", "res4", "res5"), head_channels=32, head_upsample="bilinear").eval()


def set_gates(net: PAGNet, setting: str, images: torch.Tensor, seed: int = 1) -> None:
    net.set_gate_mode("open")
    if setting == "res5_closed":
        net.set_gate_mode("closed", blocks=["res5"])
    elif setting == "random_half":
        gen = torch.Generator().manual_seed(seed)
        h, w = (s // net.output_stride for s in images.shape[-2:])
        for _, gate in net.gates():
            gate.set_mode("fixed", (torch.rand(images.shape[0], h, w, generator=gen) < 0.5).float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clock", default="wall", choices=["wall", "thread"],
                        help="thread: this thread's CPU time (use with --threads 1)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and torch.get_num_threads() != 1:
        parser.error("--clock thread measures one CPU thread: use it with --threads 1")
    clock = {"wall": time.perf_counter, "thread": time.thread_time}[args.clock]
    torch.manual_seed(0)
    net = demo_net()
    print(f"load average={os.getloadavg()[0]:.1f} threads={torch.get_num_threads()} clock={args.clock} "
          f"repeats={args.repeats} (median) size={args.height}x{args.width} torch={torch.__version__}")
    print(f"{'setting':12} {'B':>2} {'dense ms':>9} {'perf ms':>9} {'time':>6} {'MAC':>6} {'eff':>6} {'call s':>7}")
    for batch in args.batches:
        images = torch.randn(batch, 3, args.height, args.width)
        for setting in SETTINGS:
            set_gates(net, setting, images)
            mac_ratio = count_macs(net, images).ratio.mean().item()
            start = time.perf_counter()
            result = measure_time_ratio(net, images, repeats=args.repeats, clock=clock)
            call = time.perf_counter() - start
            eff = (1 - result.ratio) / (1 - mac_ratio) if mac_ratio < 1 else float("nan")
            print(f"{setting:12} {batch:2} {result.dense_s * 1e3:9.2f} {result.perforated_s * 1e3:9.2f} "
                  f"{result.ratio:6.3f} {mac_ratio:6.3f} {eff:6.2f} {call:7.2f}", flush=True)


if __name__ == "__main__":
    main()
