"""Entry point: the paper's staged curriculum on Ray Train, tracked in MLflow.

    python pipelines/staged.py --config configs/demo.yaml [--set key.sub=value ...]
        [--tracking-uri http://host:5000] [--address ray://... | auto] [--restart]
    ray job submit --working-dir . -- python pipelines/staged.py --config configs/X.yaml

Without a cluster a local Ray starts itself; under `ray job submit` (RAY_ADDRESS set) the
job's cluster is used. The curriculum itself is `pipelines.train.curriculum`. The console shows
the stages and rank 0's progress (`pipelines.train.progress`); Ray's own logs stay in its
session directory, named once at the start. Ctrl-C stops; the same command resumes.

Re-running a pipeline id continues it; its config must match the recorded one
(`pipelines.train.recorded`). `--restart` starts the id afresh: the old records and
checkpoints move to `<storage>/<id>.restarted-<time>`, its MLflow runs and registry versions
are re-tagged `<id>.restarted-<time>` (kept, no longer continued), and new runs start.

Every check that needs no cluster (config, data, the recorded config, the MLflow server) runs
before Ray starts. Errors are one line per cause on stderr with credentials masked, never a
traceback (exit 2: the config or data; 1: a failed stage or anything else).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import ray

from pipelines.cluster import describe, init_ray
from pipelines.config import ConfigError, load_config
from pipelines.tracking.redaction import describe_error, redact_text
from pipelines.train.curriculum import (
    check_resources,
    front_table,
    open_tracker,
    preflight,
    run_pipeline,
)
from pipelines.train.progress import RESUME_HINT, ProgressConsole
from pipelines.train.recorded import archive, check_recorded
from pipelines.train.stages import StageError


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines/staged.py", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML file under configs/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, repeatable")
    parser.add_argument("--tracking-uri", default=None, help="MLflow server (default: SQLite in the run dir)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)")
    parser.add_argument(
        "--restart", action="store_true",
        help="start this pipeline id afresh: archive its records, checkpoints and MLflow runs",
    )
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except Exception as err:  # one redacted line per cause: a traceback would print credentials
        print(f"error: {describe_error(err)}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.tracking_uri:
        overrides.append(f"tracking.tracking_uri={args.tracking_uri}")
    try:
        config = load_config(args.config, overrides)
        if config.sweep is not None:
            raise ConfigError(f"{args.config}: has a `sweep:` section; run it with pipelines/sweep.py")
        preflight(config)
        if args.restart:
            suffix, moved = archive(config)
            open_tracker(config).archive_pipeline(config.pipeline_id, suffix, config.tracking.registered_model)
            print(f"restart: the previous {config.pipeline_id!r} records are in {moved}")
        check_recorded(config)
        tracker = open_tracker(config)
    except ConfigError as err:
        print(f"error: {redact_text(str(err))}", file=sys.stderr)
        return 2
    session = init_ray(args.address, worker_logs=False)
    try:
        check_resources(config, ray.cluster_resources(), autoscaling=not session.started_local)
    except ConfigError as err:
        print(f"error: {redact_text(str(err))}", file=sys.stderr)
        return 2
    if describe(session):
        print(describe(session), flush=True)
    try:
        with ProgressConsole() as console:
            result = run_pipeline(config, progress=console.line, tracker=tracker)
    except StageError as err:
        print(f"error: {redact_text(str(err))}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):  # Ray Train's Ctrl-C handler ends with sys.exit
        print(RESUME_HINT, file=sys.stderr)
        return 130
    print(front_table(result, config))
    print(f"MLflow: {redact_text(result.tracking_uri)} (parent run {result.parent_run_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
