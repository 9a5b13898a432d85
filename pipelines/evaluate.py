"""Score a trained model on a split: metrics JSON, prediction and ponder-map PNGs.

    python -m pipelines.evaluate --model runs/demo/.../checkpoint_00000080 \
        --data demo_out/shards/nyuv2 --split test --out eval_out
    python -m pipelines.evaluate --model models:/pag-demo@demo-champion --tracking-uri ... ...

The model is a checkpoint directory written by the training loop, or a registered model
URI (`models:/NAME@ALIAS`, `models:/NAME/VERSION`). Evaluation reads the shards directly
with pyarrow (no Ray needed), one image at a time at full size, with gates in eval mode
(argmax, no Gumbel noise). Metrics: the metrics library's meters per task, multiply-adds per
image actually spent (and the ratio to all gates open), per-layer densities, and the ponder
ratio (`pipelines.scoring`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipelines.atomic import write_json
from pipelines.datasets import shards
from pipelines.datasets.eval_reader import eval_batches
from pipelines.scoring import evaluate_model
from pipelines.tracking.load import load_model
from pipelines.tracking.redaction import describe_error, redact_text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint directory or models:/NAME@ALIAS")
    parser.add_argument("--data", required=True, help="shard directory (local or s3://)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="directory for metrics.json and PNGs")
    parser.add_argument("--tracking-uri", default=None, help="MLflow URI for models:/ URIs")
    parser.add_argument("--max-images", type=int, default=0, help="0 = the whole split")
    args = parser.parse_args(argv)
    try:
        return _evaluate(args)
    except Exception as err:  # one redacted line per cause, never a traceback with credentials
        print(f"error: {describe_error(err)}", file=sys.stderr)
        return 1


def _evaluate(args: argparse.Namespace) -> int:
    try:
        manifest = shards.read_manifest(args.data)
        shards.split_files(args.data, args.split, manifest)  # a bad --split, before any model is read
        net = load_model(args.model, args.tracking_uri)
    except (FileNotFoundError, ValueError) as err:  # ShardError is a ValueError
        print(f"error: {redact_text(str(err))}", file=sys.stderr)
        return 2
    tasks = tuple(net.tasks)
    metrics = evaluate_model(
        net,
        eval_batches(args.data, args.split, tasks, args.max_images),
        tasks,
        net.num_classes,
        png_dir=args.out,
        class_names=manifest.get("class_names") or None,
    )
    path = write_json(Path(args.out) / "metrics.json", {"model": args.model, "split": args.split, "metrics": metrics})
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"wrote {path} and PNGs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
