"""Connecting to Ray: the job's cluster, a given address, or a private local instance."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import ray
from ray.data import DataContext


@dataclass(frozen=True)
class RaySession:
    """What `init_ray` connected to.

    Args:
        started_local: this call started a private local Ray (a fixed set of resources:
            this machine's); False when it joined a cluster or Ray was already initialised.
        log_dir: Ray's session logs (workers, Ray Train, Ray Data), on the head node; None
            when Ray was already initialised.
    """

    started_local: bool
    log_dir: Optional[str]


def init_ray(address: Optional[str], worker_logs: bool = True) -> RaySession:
    """Connect to `address`, or to the job's cluster (RAY_ADDRESS), or start a local Ray.

    A local Ray gets its dashboard (on 127.0.0.1): Ray Train's placement-group cleaner asks
    the state API, which it serves, whether a stage's controller is alive. Without it the
    cleaner cannot clean up after a controller that died, and it logs a warning every few
    seconds (~230 lines in one demo run); Train worker groups inside Tune trials need it to
    start at all.

    Args:
        address: a Ray address, "auto", or None (RAY_ADDRESS, else a private local Ray).
        worker_logs: forward the workers' and actors' stdout/stderr to this console. The
            staged pipeline turns it off (its progress reaches the console as data, see
            `pipelines.train.progress`): the rest is Ray's own detail, kept in `log_dir`.
    """
    # Ray Data's per-execution plan lines (one per epoch per stage); datasets built in this
    # process carry this context to their coordinators.
    DataContext.get_current().print_on_execution_start = False
    # Per-operator bars from every epoch would drown the stage progress lines.
    DataContext.get_current().enable_progress_bars = False
    if ray.is_initialized():
        return RaySession(started_local=False, log_dir=None)
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    # "local" always starts a private instance: never attach to someone else's `ray start`.
    kwargs = {"include_dashboard": True, "dashboard_host": "127.0.0.1"} if target == "local" else {}
    context = ray.init(address=target, log_to_driver=worker_logs, **kwargs)
    session_dir = (getattr(context, "address_info", None) or {}).get("session_dir")  # none over ray://
    log_dir = os.path.join(session_dir, "logs") if session_dir else None
    return RaySession(started_local=target == "local", log_dir=log_dir)


def describe(session: RaySession) -> Optional[str]:
    """The one console line saying where Ray's own detail went (None when unknown)."""
    if session.log_dir is None:
        return None
    where = "" if session.started_local else " on the Ray head node"
    return f"Ray's own logs (workers, Ray Train, Ray Data): {session.log_dir}{where}"
