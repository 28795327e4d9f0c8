"""Where the job runs: an embedded local Ray (default) or an existing cluster.

    mlrt run jobs/digits.yaml                         # local Ray started and stopped here
    mlrt run jobs/digits.yaml --address ray://h:10001 # join a cluster
    ray job submit --working-dir . -- mlrt run ...    # inside a Ray job: RAY_ADDRESS is set
"""

from __future__ import annotations

import logging
import os

# Local logical CPUs: Ray schedules by logical CPUs, and a 2-core laptop still needs room for
# 2 training workers plus Ray Data tasks; oversubscribing a little is cheaper than queueing.
DEFAULT_LOCAL_CPUS = 4
DEFAULT_OBJECT_STORE_BYTES = 512 * 1024**2
# Ray Train V2 hands each `ray.train.report` to its controller, which polls every 2 s by default:
# a report blocks until then, so a fast epoch costs 2 s. Polling at 0.2 s cuts the digits job's
# training from ~59 s to a few seconds of real work. Users can still set these themselves.
TRAIN_ENV_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Start or join Ray; return a short description of where the job runs."""
    import ray

    if ray.is_initialized():
        return "existing Ray session"
    _quiet_ray()
    for key, value in TRAIN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return f"Ray cluster at {address}"
    cpus = num_cpus or max(DEFAULT_LOCAL_CPUS, os.cpu_count() or 1)
    ray.init(
        num_cpus=cpus,
        object_store_memory=int(os.environ.get("MLRT_OBJECT_STORE_BYTES",
                                               DEFAULT_OBJECT_STORE_BYTES)),
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    return f"local Ray ({cpus} logical CPUs)"


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _quiet_ray() -> None:
    """Progress bars and per-operator logs of Ray Data are noise for small jobs in a terminal."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
