"""Connecting to Ray: the job's cluster, a given address, or a private local instance."""
from __future__ import annotations

import os
from typing import Optional


def init_ray(address: Optional[str]) -> bool:
    """Connect to `address`, or to the job's cluster (RAY_ADDRESS), or start a local Ray.

    Returns True when this call started a local Ray (a fixed set of resources: this
    machine's), False when it joined a cluster or Ray was already initialised.

    A local Ray gets its dashboard (on 127.0.0.1): Ray Train's placement-group cleaner asks
    the state API, which it serves, whether a stage's controller is alive. Without it the
    cleaner cannot clean up after a controller that died, and it logs a warning every few
    seconds (~230 lines in one demo run); Train worker groups inside Tune trials need it to
    start at all.
    """
    import ray

    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    # "local" always starts a private instance: never attach to someone else's `ray start`.
    kwargs = {"include_dashboard": True, "dashboard_host": "127.0.0.1"} if target == "local" else {}
    ray.init(address=target, log_to_driver=True, **kwargs)
    from ray.data import DataContext

    # Per-operator bars from every epoch would drown the stage progress lines.
    DataContext.get_current().enable_progress_bars = False
    return target == "local"
