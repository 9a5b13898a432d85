"""The README's main command: PAG against the paper's baselines on generated scenes, on a laptop.

    python -m pipelines.demo [--out demo_out] [--seeds 3] [--set key.sub=value ...]

1. writes NYUv2-format scenes (the real `nyu_depth_v2_labeled.mat` layout, v7.3/HDF5),
2. converts them to Parquet shards with the dataset converter,
3. runs `configs/demo.yaml` on a local Ray with 2 CPU train workers, MLflow in a SQLite file
   under the output directory: a dense base, then from that one checkpoint, once per seed
   (stages `<name>-s<seed>`, `pipelines.config.repeat`), PAG at rho 0.5, a dense-continued
   control and the paper's Table 2 baselines (truncation, layer skipping, a learned static mask),
4. prints each seed's table and the summary over seeds (multiply-add and measured time ratios
   to dense, mIoU, ponder ratio near label changes, evaluated density), the claims checked,
   and writes `summary.json` and `front.png` (accuracy against computation saved, all seeds)
   to the output directory.

Re-running continues where it stopped: data already written is kept and finished stages
are skipped (their "stage done" records).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from pipelines.cluster import describe, init_ray
from pipelines.config import ConfigError, PipelineConfig, load_config
from pipelines.config.repeat import repeat_over_seeds
from pipelines.datasets.convert import convert
from pipelines.datasets.write_formats import write_dataset
from pipelines.atomic import write_json
from pipelines.tracking.front import FrontPoint, plot_front
from pipelines.train.curriculum import front_table, preflight, run_pipeline
from pipelines.train.progress import RESUME_HINT, ProgressConsole
from pipelines.train.recorded import check_recorded
from pipelines.train.summary import check_claims, summary_points, summary_table

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
SCENES = {"train": 448, "test": 64}
SIZE = (96, 128)  # (H, W): divisible by 8; the demo trains on whole images
SEEDS = 3


def prepare_data(out: Path, scenes: dict[str, int] = SCENES, size: tuple[int, int] = SIZE) -> Path:
    """Generated NYUv2 files under out/raw/nyuv2, shards under out/shards/nyuv2 (kept if present)."""

    raw = out / "raw" / "nyuv2"
    shards = out / "shards" / "nyuv2"
    if (shards / "manifest.json").is_file():
        print(f"[demo] shards already in {shards}")
        return shards
    start = time.monotonic()
    print(f"[demo] writing {sum(scenes.values())} NYUv2-format scenes ({size[0]}x{size[1]}) to {raw}")
    write_dataset("nyuv2", raw, n_per_split=dict(scenes), size=size, seed=0)
    print(f"[demo] converting to shards in {shards}")
    convert("nyuv2", str(raw), str(shards))
    print(f"[demo] data ready in {time.monotonic() - start:.0f}s")
    return shards


def demo_config(out: Path, seeds: int = SEEDS, overrides: Sequence[str] = ()) -> PipelineConfig:
    """configs/demo.yaml with its paths moved under `out` and the user's overrides, its
    comparison (the stages branching off the base) repeated for seeds 0..seeds-1."""
    paths = [f"storage_path={out / 'runs'}", f"data.uri={out / 'shards' / 'nyuv2'}"]
    return repeat_over_seeds(load_config(CONFIG, [*paths, *overrides]), range(seeds))


def write_summary(out: Path, rows: list[dict], metric: str, minutes: float, seeds: int) -> tuple[Path, list[dict]]:
    """summary.json (points of every seed, the claims checked) and front.png in `out`."""
    checks = check_claims(rows, metric)
    summary = {"minutes": minutes, "seeds": seeds, "metric": metric, "points": rows, "checks": checks}
    path = write_json(out / "summary.json", summary)
    points = [FrontPoint(r["stage"], r["metrics"]["macs"], r["metrics"][metric], r) for r in rows]
    plot_front(points, out / "front.png", metric)
    return path, checks


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_out", help="output directory (data, runs, MLflow, summary)")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="repeats of the comparison, seeds 0..N-1")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--scenes", type=int, nargs=2, default=[SCENES["train"], SCENES["test"]],
                        metavar=("TRAIN", "TEST"), help="generated scenes per split")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        print(f"error: --seeds={args.seeds}: expected at least 1", file=sys.stderr)
        return 2
    if min(args.scenes) < 1:
        print(f"error: --scenes {args.scenes[0]} {args.scenes[1]}: expected at least 1 scene per split", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    start = time.monotonic()
    try:
        config = demo_config(out, args.seeds, args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    prepare_data(out, {"train": args.scenes[0], "test": args.scenes[1]})
    try:
        preflight(config)
        check_recorded(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    session = init_ray(None, worker_logs=False)
    if describe(session):
        print(f"[demo] {describe(session)}")
    print(f"[demo] {len(config.stages)} stages ({args.seeds} seed(s) of the comparison), "
          f"{config.scaling.num_workers} CPU workers; progress below")
    try:
        with ProgressConsole(prefix="[demo] ") as console:
            result = run_pipeline(config, progress=console.line)
    except (KeyboardInterrupt, SystemExit):  # Ray Train's Ctrl-C handler ends with sys.exit
        print(f"[demo] {RESUME_HINT}", file=sys.stderr)
        return 130
    print()
    print(front_table(result, config))
    stages = {s.name: s for s in config.stages}
    rows = summary_points(result.points, {r.stage: r.metrics for r in result.records}, stages, config.train.seed)
    metric = config.tracking.front_metric
    minutes = (time.monotonic() - start) / 60
    path, checks = write_summary(out, rows, metric, minutes, args.seeds)
    print()
    print(f"summary over {args.seeds} seed(s), mean [min..max]; MACs and time: ratios to the dense model; "
          "ponder: gated layers computing within 8 px of a label change / elsewhere:")
    print(summary_table(rows, metric))
    print("claims:")
    for c in checks:
        value = "-" if c["value"] is None else f"{c['value']:.3f}"
        print(f"  {'ok  ' if c['ok'] else 'MISS'} seed {c['seed']}: {c['claim']}: {value}")
    print(f"summary: {path}; front of every seed: {out / 'front.png'}")
    print(f"pictures (image | ground truth | prediction; ponder maps) per stage: {out / 'runs' / config.pipeline_id / 'eval'}")
    print(f"front plot and CSV: artifacts front/front.png, front/front.csv of MLflow run {result.parent_run_id}")
    print(f"[demo] finished in {minutes:.1f} min. Open the results with:")
    print(f"  mlflow ui --backend-store-uri {result.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
