"""Are the generated room scenes hard enough that computation matters? One process, one thread.

    PYTHONPATH=. .venv/bin/python benchmarks/scene_difficulty.py [--train 448] [--test 64] [--iterations 400]

Renders train and test "room" scenes with `render_scene` (no Ray, no files), then trains two
semantic-only `resnet_demo` PAGNets from scratch on full images (Adam, lr 2e-3, batch 8,
ImageNet normalisation, labels = the scene's own class ids):

- base:      every 3x3 conv computed;
- truncated: the 3x3 convs of the Res5 blocks (`backbone.layer4`) never computed (gates
             built at Res5 and held "closed"), i.e. naive truncation of the top 4 blocks.

Reports seconds per rendered scene, and for each model the test mIoU, pixel accuracy, and
pixel accuracy within 8 px of a label change vs elsewhere. Targets: base mIoU about 0.5-0.8
(not solved) and the truncated model at least 3 mIoU points worse.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from pag_model import PAGNet
from pipelines.datasets.layouts import ROOM_CLASSES
from pipelines.datasets.scenes import render_scene
from pipelines.datasets.schema import IMAGENET_MEAN, IMAGENET_STD

SIZE = (96, 128)
NEAR_PX = 8
IGNORE = 255


def render(seeds: range) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(N, 3, H, W) normalised images, (N, H, W) int64 labels, seconds per scene."""
    start = time.perf_counter()
    scenes = [render_scene(s, SIZE, "room") for s in seeds]
    seconds = (time.perf_counter() - start) / len(scenes)
    images = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    labels = torch.from_numpy(np.stack([s.semantic for s in scenes]).astype(np.int64))
    return (images - mean) / std, labels, seconds


def near_label_change(labels: torch.Tensor, px: int = NEAR_PX) -> torch.Tensor:
    """(N, H, W) bool: within `px` pixels (Chebyshev) of a pixel whose right/lower neighbour differs."""
    change = torch.zeros_like(labels, dtype=torch.bool)
    change[:, :, :-1] |= labels[:, :, :-1] != labels[:, :, 1:]
    change[:, :-1, :] |= labels[:, :-1, :] != labels[:, 1:, :]
    grown = F.max_pool2d(change[:, None].float(), 2 * px + 1, stride=1, padding=px)
    return grown[:, 0] > 0


def train(images: torch.Tensor, labels: torch.Tensor, truncated: bool, iterations: int, seed: int) -> PAGNet:
    torch.manual_seed(seed)
    net = PAGNet(
        backbone="resnet_demo",
        tasks=("semantic",),
        num_classes=len(ROOM_CLASSES),
        multipool=None,
        gated=("res5",) if truncated else (),
        head_channels=32,
        head_upsample="bilinear",
    )
    if truncated:
        net.set_gate_mode("closed", ["res5"])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    net.train()
    start = time.perf_counter()
    for it in range(iterations):
        idx = order[(it * 8) % len(images):][:8]
        if len(idx) < 8:
            idx = torch.cat([idx, order[: 8 - len(idx)]])
        logits = net(images[idx])["semantic"]
        loss = F.cross_entropy(logits, labels[idx], ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (it + 1) % 100 == 0:
            print(f"  iter {it + 1}: loss {loss.item():.3f} ({(time.perf_counter() - start) / (it + 1):.3f} s/iter)", flush=True)
    return net


@torch.no_grad()
def evaluate(net: PAGNet, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    net.eval()
    pred = torch.cat([net(images[i : i + 16])["semantic"].argmax(1) for i in range(0, len(images), 16)])
    valid = labels != IGNORE
    k = len(ROOM_CLASSES)
    confusion = torch.bincount(labels[valid] * k + pred[valid], minlength=k * k).reshape(k, k).double()
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = confusion.sum(1) > 0
    iou = inter[present] / union[present]
    correct = (pred == labels) & valid
    near = near_label_change(labels) & valid
    far = ~near & valid
    per_class = {ROOM_CLASSES[c]: float(inter[c] / union[c]) for c in range(k) if present[c]}
    return {
        "miou": float(iou.mean()),
        "pixel_acc": float(correct.sum() / valid.sum()),
        "acc_near": float(correct[near].sum() / near.sum().clamp(min=1)),
        "acc_far": float(correct[far].sum() / far.sum().clamp(min=1)),
        "near_frac": float(near.sum() / valid.sum()),
        "per_class": per_class,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=448)
    parser.add_argument("--test", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x_train, y_train, sec_train = render(range(args.train))
    x_test, y_test, sec_test = render(range(100_000, 100_000 + args.test))
    print(f"render: {(sec_train * args.train + sec_test * args.test) / (args.train + args.test):.4f} s/scene at {SIZE[0]}x{SIZE[1]}")
    counts = torch.bincount(y_test[y_test != IGNORE], minlength=len(ROOM_CLASSES)).double()
    print("test class frequency:", ", ".join(f"{n} {f:.3f}" for n, f in zip(ROOM_CLASSES, counts / counts.sum())))
    for name, truncated in (("base", False), ("truncated (Res5 3x3 convs skipped)", True)):
        print(f"{name}: training {args.iterations} iterations")
        net = train(x_train, y_train, truncated, args.iterations, args.seed)
        m = evaluate(net, x_test, y_test)
        print(f"{name}: mIoU {m['miou']:.3f}  pixel acc {m['pixel_acc']:.3f}  "
              f"acc within {NEAR_PX} px of a label change {m['acc_near']:.3f} ({m['near_frac']:.0%} of pixels) / elsewhere {m['acc_far']:.3f}")
        print("  per-class IoU:", ", ".join(f"{n} {v:.2f}" for n, v in m["per_class"].items()))


if __name__ == "__main__":
    main()
