"""The README's main command: the whole staged curriculum on generated scenes, on a laptop.

    python -m pipelines.demo [--out demo_out] [--set key.sub=value ...]

1. writes NYUv2-format scenes (the real `nyu_depth_v2_labeled.mat` layout, v7.3/HDF5),
2. converts them to Parquet shards with the dataset converter,
3. runs `configs/demo.yaml` (base -> +MultiPool -> gates -> rho 0.9/0.7/0.5) on a local Ray
   with 2 CPU train workers, MLflow in a SQLite file under the output directory,
4. prints the front table (stage, rho, multiply-adds, mIoU, depth delta1), where the
   prediction and ponder-map PNGs are, the ponder ratio near boundaries vs interiors, and
   the command that opens the MLflow UI on the result.

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
from pipelines.datasets.convert import convert
from pipelines.datasets.write_formats import write_dataset
from pipelines.train.curriculum import champion_alias, front_table, preflight, run_pipeline
from pipelines.train.progress import RESUME_HINT, ProgressConsole
from pipelines.train.recorded import check_recorded

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
SCENES = {"train": 192, "test": 16}
SIZE = (96, 128)  # (H, W): divisible by 8 for the network, crops of 64x64 for training


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


def demo_config(out: Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """configs/demo.yaml with its paths moved under `out`, then the user's overrides."""
    paths = [f"storage_path={out / 'runs'}", f"data.uri={out / 'shards' / 'nyuv2'}"]
    return load_config(CONFIG, [*paths, *overrides])


def ponder_summary(result) -> Optional[str]:
    """One line per gated stage: mean ponder near GT boundaries / in interiors."""
    rows = [
        f"  {r.stage:<14} near {r.metrics['ponder/near_boundary']:.2f} / interior "
        f"{r.metrics['ponder/interior']:.2f} = {r.metrics['ponder/boundary_ratio']:.2f}"
        for r in result.records
        if "ponder/boundary_ratio" in r.metrics
    ]
    return "\n".join(rows) if rows else None


def main(argv: Optional[Sequence[str]] = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_out", help="output directory (data, runs, MLflow)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    start = time.monotonic()
    prepare_data(out)
    try:
        config = demo_config(out, args.set)
        preflight(config)
        check_recorded(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    session = init_ray(None, worker_logs=False)
    if describe(session):
        print(f"[demo] {describe(session)}")
    print(f"[demo] {len(config.stages)} stages, {config.scaling.num_workers} CPU workers; progress below")
    try:
        with ProgressConsole(prefix="[demo] ") as console:
            result = run_pipeline(config, progress=console.line)
    except (KeyboardInterrupt, SystemExit):  # Ray Train's Ctrl-C handler ends with sys.exit
        print(f"[demo] {RESUME_HINT}", file=sys.stderr)
        return 130
    print()
    print(front_table(result, config))
    if result.champion is not None:
        print(f"champion (best {config.tracking.front_metric} within {config.tracking.budget:.0%} of dense "
              f"multiply-adds): {result.champion.name}, registered as "
              f"models:/{config.tracking.registered_model}@{champion_alias(config.pipeline_id)}")
    ponder = ponder_summary(result)
    if ponder:
        print("ponder maps (gated layers computing per pixel), within 8 px of a label change vs elsewhere:")
        print(ponder)
    print("PNGs (prediction: ground truth | prediction; ponder maps):")
    for stage, folder in result.png_dirs.items():
        print(f"  {stage:<14} {folder}")
    print(f"front plot and CSV: artifacts front/front.png, front/front.csv of run {result.parent_run_id}")
    print(f"[demo] finished in {(time.monotonic() - start) / 60:.1f} min. Open the results with:")
    print(f"  mlflow ui --backend-store-uri {result.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
