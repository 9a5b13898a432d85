"""Entry point: Ray Tune over lambda, the tau schedule and rho; the Pareto front in MLflow.

    python pipelines/sweep.py --config configs/sweep_demo.yaml [--set key.sub=value ...]
        [--sweep-id ID] [--tracking-uri http://host:5000] [--address ray://... | auto]
    ray job submit --working-dir . -- python pipelines/sweep.py --config configs/X.yaml

The sweep itself is `pipelines.sweeps.run`; resubmitting the same sweep id resumes it.
Errors are one line per cause on stderr with credentials masked, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import ray

from pipelines.cluster import init_ray
from pipelines.config import ConfigError, load_sweep_config
from pipelines.sweeps.publish import summary_table
from pipelines.sweeps.run import SweepInterrupted, preflight_sweep, run_sweep
from pipelines.tracking.redaction import describe_error, redact_text
from pipelines.train.curriculum import check_resources


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines/sweep.py", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="sweep YAML under configs/ (with a sweep: section)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, repeatable")
    parser.add_argument("--sweep-id", default=None, help="sweep id (default: sweep.sweep_id); same id resumes")
    parser.add_argument("--tracking-uri", default=None, help="MLflow server (default: SQLite in the storage dir)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except Exception as err:  # one redacted line per cause: a traceback would print credentials
        print(f"error: {describe_error(err)}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.sweep_id:
        overrides.append(f"sweep.sweep_id={args.sweep_id}")
    if args.tracking_uri:
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    try:
        pipeline, sweep = load_sweep_config(args.config, overrides)
        preflight_sweep(pipeline, sweep)
    except ConfigError as err:
        print(f"error: {redact_text(str(err))}", file=sys.stderr)
        return 2
    local = init_ray(args.address).started_local
    try:
        check_resources(pipeline, ray.cluster_resources(), autoscaling=not local)
        result = run_sweep(pipeline, sweep)
    except ConfigError as err:
        print(f"error: {redact_text(str(err))}", file=sys.stderr)
        return 2
    except SweepInterrupted as err:
        print(f"interrupted: {redact_text(str(err))}", file=sys.stderr)
        return 130
    print(summary_table(result))
    print(f"registered model {result.registered_model}: aliases {result.aliases}")
    print(f"MLflow: {redact_text(result.tracking_uri)} (parent run {result.parent_run_id})")
    return 0 if any(t.status == "done" for t in result.trials) else 1


if __name__ == "__main__":
    sys.exit(main())
