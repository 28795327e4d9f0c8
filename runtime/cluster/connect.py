"""Where the job runs: an embedded local Ray (default) or an existing cluster.

    mlrt run jobs/digits.yaml                         # local Ray started and stopped here
    mlrt run jobs/digits.yaml --address ray://h:10001 # join a cluster
    ray job submit --working-dir . -- mlrt run ...    # inside a Ray job: RAY_ADDRESS is set
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from runtime.errors import InputError

# Local logical CPUs: Ray schedules by logical CPUs, and a 2-core laptop still needs room for
# 2 training workers plus Ray Data tasks; oversubscribing a little is cheaper than queueing.
DEFAULT_LOCAL_CPUS = 4
# Ray Data budgets each operator's in-flight blocks from the object store: at 512 MiB a 2M-row
# `mlrt predict` spent most of its time throttled (59k rows/s; 126k at 2 GiB). 2 GiB, or a
# quarter of the RAM on a smaller machine; pages are only used when blocks are stored.
DEFAULT_OBJECT_STORE_BYTES = 2 * 1024**3




def default_object_store_bytes() -> int:
    """MLRT_OBJECT_STORE_BYTES, else 2 GiB or a quarter of the memory Ray sees (a container's
    cgroup limit, not the host's RAM)."""
    value = os.environ.get("MLRT_OBJECT_STORE_BYTES")
    if value:
        try:
            return int(value)
        except ValueError:
            raise InputError(f"MLRT_OBJECT_STORE_BYTES: expected a number of bytes, got "
                             f"'{value}'") from None
    from ray._common.utils import get_system_memory

    return int(min(DEFAULT_OBJECT_STORE_BYTES, get_system_memory() // 4))


# Ray Train V2 hands each `ray.train.report` to its controller, which polls every 2 s by default:
# a report blocks until then, so a fast epoch costs 2 s. Polling at 0.2 s cuts the digits job's
# training from ~59 s to a few seconds of real work. Users can still set these themselves.
# Train's print patch also copies each print() into its logger: every progress line came twice.
TRAIN_ENV_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
                      "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
# On the embedded single-node Ray nothing is preempted: skip the watcher actor (one Python
# process less to start per training run, on a 2-core laptop).
# Ray Data's parquet listing starts 32 footer-reading actors per read (sized for thousands of
# files on object stores); on one machine's local disk one actor reads every footer, and each
# read of a dataset skips ~1 s of starting Python processes.
LOCAL_ENV_DEFAULTS = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
                      "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": "1"}


# Set by keep_signal_handlers(): ray.init then leaves the caller's SIGTERM handler in place.
_keep_sigterm = False


def keep_signal_handlers() -> None:
    """For a long-running command that handles SIGTERM itself (`mlrt watch` stops between
    cycles): every ray.init replaces the SIGTERM handler with one that exits at once (exit 15,
    mid-cycle); from now on init_ray puts the caller's back. The caller shuts Ray down."""
    global _keep_sigterm
    _keep_sigterm = True


def init_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Start or join Ray; return a short description of where the job runs."""
    import ray

    if ray.is_initialized():
        return "existing Ray session"
    kept = _keep_sigterm and threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if kept else None
    try:
        return _init(ray, address, num_cpus)
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


def _init(ray, address: str | None, num_cpus: int | None) -> str:
    _quiet_ray()
    for key, value in TRAIN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        _filter_worker_logs()
        return f"Ray cluster at {address}"
    for key, value in LOCAL_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    cpus = num_cpus or max(DEFAULT_LOCAL_CPUS, os.cpu_count() or 1)
    ray.init(
        num_cpus=cpus,
        object_store_memory=default_object_store_bytes(),
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    _filter_worker_logs()
    return f"local Ray ({cpus} logical CPUs)"


# Lines Ray's actors print on every run that tell a user nothing they can act on. Set
# MLRT_RAY_LOGS=all to see everything (they are always in /tmp/ray/session_latest/logs).
_NOISE = (
    "State API may be temporarily unavailable",  # Train's PG cleaner, when no dashboard runs
    "Progress bars disabled",
    "execution finished in",
    "Reporting training result",
    "Checkpoint successfully created at",
    "has constructor arguments in the object store and max_restarts",
    "ExecutionOptions.exclude_resources",
    "self.exclude_resources = exclude_resources",
    "Setting up process group for",
    "Started training worker group",
    "world_rank=",
    "Requesting resources:",
    "Attempting to start training worker group",
)


# Ray Train's placement-group janitor: without a dashboard (or with two local Rays on one
# machine) its state queries fail on every poll and it prints a traceback; the job is unaffected.
_QUIET_ACTORS = frozenset({"PlacementGroupCleaner"})


def _filter_worker_logs() -> None:
    """Drop Ray's per-run chatter from the worker logs forwarded to this terminal, keeping
    training progress, warnings and errors. Uses Ray's log dispatcher; if its private API
    changes, logs are simply left unfiltered."""
    if os.environ.get("MLRT_RAY_LOGS") == "all":
        return
    try:
        from ray._private import worker as ray_worker

        dispatcher = ray_worker.global_worker_stdstream_dispatcher
        original = dict(dispatcher.handlers)["ray_print_logs"]
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return

    def _filtered(data: dict) -> None:
        if data.get("actor_name") in _QUIET_ACTORS:
            return
        lines = [line for line in data.get("lines", []) if not any(n in line for n in _NOISE)]
        if lines:
            original({**data, "lines": lines})

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", _filtered)


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _drop_token_notice(record: logging.LogRecord) -> bool:
    """Ray warns on every local start that token authentication is on (by default); it stays
    on, and a user can do nothing about the notice. Its warning when auth is OFF still shows."""
    return "Token authentication is enabled" not in record.getMessage()


def _quiet_ray() -> None:
    """Progress bars and per-operator logs of Ray Data are noise for small jobs in a terminal;
    so is Ray's notice that token authentication is on."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        _drop_token_notice)
    import ray.data
    from ray.util.debug import log_once

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    log_once("ray_data_progress_manager_disabled")  # marks Ray's "bars disabled" notice as shown
    logging.getLogger("ray.data").setLevel(logging.WARNING)
