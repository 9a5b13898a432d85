"""Score a trained model on a split: metrics JSON, prediction and ponder-map PNGs.

    python -m pipelines.evaluate --model runs/demo/.../checkpoint_00000080 \
        --data demo_out/shards/nyuv2 --split test --out eval_out
    python -m pipelines.evaluate --model models:/pag-demo@champion --tracking-uri ... ...

The model is a checkpoint directory written by the training loop, or a registered model
URI (`models:/NAME@ALIAS`, `models:/NAME/VERSION`). Evaluation reads the shards directly
with pyarrow (no Ray needed), one image at a time at full size, with gates in eval mode
(argmax, no Gumbel noise). Metrics: the metrics library's meters per task, multiply-adds per
image actually spent (and the ratio to all gates open), per-layer densities, and the ponder
ratio: mean ponder value within `BOUNDARY_RADIUS` pixels of two different ground-truth labels
divided by the mean elsewhere (> 1: more computation near boundaries, as the paper reports).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pag_model import count_macs, ponder_maps, save_ponder_png
from pipelines.mlflow_scope import mlflow_scope

BOUNDARY_RADIUS = 8  # pixels: one output-stride cell, the gates' resolution
IGNORE = 255


def eval_batches(
    uri: str,
    split: str,
    tasks: Sequence[str],
    max_images: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of one image in the training layout, read straight from the split's shards."""
    import pyarrow.parquet as pq

    from pipelines.datasets import shards, storage
    from pipelines.datasets.ray_pipeline import fields_for, to_torch_batch

    manifest = shards.read_manifest(uri)
    fields = fields_for(tasks)
    seen = 0
    for file_uri in shards.split_files(uri, split, manifest):
        fs, path = storage.filesystem(file_uri)
        with fs.open_input_file(path) as handle:
            table = pq.read_table(handle)
        for row in table.to_pylist():
            sample = shards.decode_row(row, fields)
            yield to_torch_batch({k: v[None] for k, v in sample.items()})
            seen += 1
            if max_images and seen >= max_images:
                return


def boundary_mask(labels: torch.Tensor, radius: int = BOUNDARY_RADIUS) -> torch.Tensor:
    """(B, H, W) bool: pixels whose (2 radius + 1)^2 window holds two different valid labels.

    Unlabelled (IGNORE) pixels are skipped, so a change across a thin unlabelled band
    between two objects (common in NYUv2) still counts as a boundary.
    """
    lab = labels.double()
    valid = labels != IGNORE
    k, pad = 2 * radius + 1, radius
    hi = F.max_pool2d(torch.where(valid, lab, -1.0)[:, None], k, stride=1, padding=pad)[:, 0]
    lo = -F.max_pool2d(torch.where(valid, -lab, -1e9)[:, None], k, stride=1, padding=pad)[:, 0]
    return (hi >= 0) & (hi != lo)


def _meters(tasks: Sequence[str], num_classes: int) -> dict[str, Any]:
    import pag_model.metrics as metrics

    factories = {
        "semantic": lambda: metrics.SegmentationMeter(num_classes),
        "depth": lambda: metrics.DepthMeter(),
        "normals": lambda: metrics.NormalsMeter(),
        "boundary": lambda: metrics.BoundaryMeter(),
    }
    return {t: factories[t]() for t in tasks}


def _update(meter: Any, task: str, outputs: dict, batch: dict) -> None:
    if task == "semantic":
        meter.update(outputs["semantic"], batch["semantic"])
    elif task == "depth":
        meter.update(outputs["depth"][:, 0].exp(), batch["depth"], batch["depth_valid"])
    elif task == "normals":
        meter.update(outputs["normals"], batch["normals"], batch["normals_valid"])
    elif task == "boundary":
        meter.update(torch.sigmoid(outputs["boundary"][:, 0]), batch["boundary_annotators"])


@torch.no_grad()
def evaluate_model(
    net: nn.Module,
    batches: Iterator[dict[str, torch.Tensor]],
    tasks: Sequence[str],
    num_classes: int,
    device: torch.device | str = "cpu",
    png_dir: Optional[str | Path] = None,
    max_pngs: int = 4,
) -> dict[str, float]:
    """Metrics of `net` (a PAGNet) over `batches`, keys like "semantic/miou", "macs".

    Writes `pred_<i>.png` and `ponder_<i>.png` for the first `max_pngs` images to `png_dir`.
    The model's train/eval mode is restored afterwards.
    """
    was_training = net.training
    net.eval()
    from pag_model.metrics import ComputationMeter

    meters = _meters(tasks, num_classes)
    computation = ComputationMeter()
    images = 0
    near_sum = near_n = far_sum = far_n = 0.0
    gated = any(True for _ in _gated(net))
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = net(batch["image"])
        for task, meter in meters.items():
            _update(meter, task, outputs, batch)
        report = count_macs(net, batch["image"])
        computation.update(report.macs, report.dense_macs, report.densities)
        images += batch["image"].shape[0]
        ponder = ponder_maps(net, tuple(batch["image"].shape[-2:]))["overall"] if gated else None
        if ponder is not None and "semantic" in batch:
            near = boundary_mask(batch["semantic"])
            valid = batch["semantic"] != IGNORE
            near_sum += float(ponder[near & valid].sum())
            near_n += float((near & valid).sum())
            far_sum += float(ponder[~near & valid].sum())
            far_n += float((~near & valid).sum())
        if png_dir is not None and i < max_pngs:
            _save_pngs(Path(png_dir), i, batch, outputs, ponder, len(list(_gated(net))))
    if images == 0:
        raise ValueError("evaluation saw no images (empty split, or max_images=0 on an empty set)")
    out: dict[str, float] = {}
    for task, meter in meters.items():
        for key, value in meter.compute().items():
            if isinstance(value, (int, float)) and "/" not in key:  # per-class IoUs left out
                out[f"{task}/{key}"] = float(value)
    out.update({k: float(v) for k, v in computation.compute().items()})
    out["dense_macs"] = out["macs"] / out["macs_ratio"]  # mean MACs with every gate open
    out["images"] = float(images)
    if near_n and far_n and far_sum > 0:
        out["ponder/near_boundary"] = near_sum / near_n
        out["ponder/interior"] = far_sum / far_n
        out["ponder/boundary_ratio"] = (near_sum / near_n) / (far_sum / far_n)
    net.train(was_training)
    return out


def _gated(net: nn.Module):
    from pag_model import PAGBottleneck

    return (m for m in net.modules() if isinstance(m, PAGBottleneck))


def _palette(n: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    colours = rng.integers(40, 256, size=(256, 3), dtype=np.uint8)
    colours[IGNORE] = 0
    return colours


def _save_pngs(out: Path, i: int, batch: dict, outputs: dict, ponder: Optional[torch.Tensor], layers: int) -> None:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    if "semantic" in outputs:
        palette = _palette(256)
        gt = palette[batch["semantic"][0].cpu().numpy().astype(np.int64)]
        pred = palette[outputs["semantic"][0].argmax(0).cpu().numpy()]
        panel = np.concatenate([gt, np.zeros((gt.shape[0], 4, 3), np.uint8), pred], axis=1)
    else:
        key = next(k for k in ("depth", "normals", "boundary") if k in outputs)
        pred = outputs[key][0].float().cpu()
        pred = pred[0] if pred.shape[0] == 1 else pred.abs().mean(0)
        span = (pred.max() - pred.min()).clamp_min(1e-6)
        panel = (((pred - pred.min()) / span).numpy() * 255).astype(np.uint8)
    tmp = out / f".pred_{i:02d}.tmp.png"
    Image.fromarray(panel).save(tmp)
    os.replace(tmp, out / f"pred_{i:02d}.png")
    if ponder is not None:
        save_ponder_png(ponder[0], out / f"ponder_{i:02d}.png", max_value=float(layers))


def load_model(model: str, tracking_uri: Optional[str] = None) -> nn.Module:
    """A PAGNet from a checkpoint directory or a `models:/...` URI, on CPU, in eval mode."""
    if model.startswith("models:/"):
        import mlflow

        with mlflow_scope(tracking_uri) if tracking_uri else nullcontext():
            exported = mlflow.pytorch.load_model(model, map_location="cpu")
        net = exported.net
    else:
        from pipelines.train_loop import build_model, load_state

        state = load_state(model)
        net = build_model(state["model_config"], state["stage"])
        net.load_state_dict(state["model"])
    return net.eval()


def write_json(obj: Any, path: str | Path) -> Path:
    """JSON written atomically (temp name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory or models:/NAME@ALIAS")
    parser.add_argument("--data", required=True, help="shard directory (local or s3://)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="directory for metrics.json and PNGs")
    parser.add_argument("--tracking-uri", default=None, help="MLflow URI for models:/ URIs")
    parser.add_argument("--max-images", type=int, default=0, help="0 = the whole split")
    args = parser.parse_args(argv)
    from pipelines.datasets import shards

    try:
        manifest = shards.read_manifest(args.data)
        net = load_model(args.model, args.tracking_uri)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tasks = tuple(net.tasks)
    metrics = evaluate_model(
        net,
        eval_batches(args.data, args.split, tasks, args.max_images),
        tasks,
        len(manifest["class_names"]),
        png_dir=args.out,
    )
    path = write_json({"model": args.model, "split": args.split, "metrics": metrics}, Path(args.out) / "metrics.json")
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"wrote {path} and PNGs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
