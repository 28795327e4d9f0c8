"""`mlrt watch SPEC [--once] [--trigger manual]`: the closed loop (runtime.watch).

    mlrt watch jobs/digits.yaml                          # a cycle every monitor.interval
    mlrt watch jobs/digits.yaml --once                   # one cycle (cron, CI, tests)
    mlrt watch jobs/digits.yaml --once --trigger manual  # retrain now, through the same gate

SIGTERM or Ctrl-C stops it between cycles (a retrain under way finishes first; a second
Ctrl-C interrupts it, and the next watcher starts that retrain once more).
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from runtime.cli.options import ActorOpt, SetOpt, SpecArg, echo, err

TriggerOpt = Annotated[str | None, typer.Option(
    help="manual: retrain in the first cycle whatever the monitor says (not held back by "
         "the cooldown).", show_default=False)]


def watch(
    spec: SpecArg,
    set_: SetOpt = None,
    once: Annotated[bool, typer.Option(help="Run one cycle and exit.")] = False,
    trigger: TriggerOpt = None,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join for monitoring and retraining (default: a local Ray, or "
             "RAY_ADDRESS).", show_default=False)] = None,
    actor: ActorOpt = None,
) -> None:
    """Monitor the served model each interval, retrain on drift, quality or schedule through
    the gate, canary the challenger, then promote or roll it back; every step audited.

    Exit 0 when the cycles ran (a failed retrain is a recorded decision, not an error), 2 for
    a bad spec or arguments.
    """
    from runtime.errors import InputError
    from runtime.spec import load_spec

    if trigger not in (None, "manual"):
        raise InputError(f"--trigger: only 'manual' can be given by hand, got '{trigger}'")
    job = load_spec(spec, set_ or [])  # a bad spec fails here, before Ray starts
    from runtime.cluster.connect import keep_signal_handlers, shutdown_ray
    from runtime.watch.cycle import run_cycle

    stop = threading.Event()
    _on_signals(stop)
    keep_signal_handlers()  # each cycle's ray.init would replace them with Ray's own
    err().print(f"mlrt: watching {job.name} every {job.monitor.interval}"
                f"{' (one cycle)' if once else '; Ctrl-C or SIGTERM stops it'}")
    manual = trigger == "manual"
    from runtime.errors import MlrtError

    try:
        while True:
            try:
                run_cycle(job, manual=manual, address=address, echo=echo, actor=actor)
            except MlrtError as e:
                if once:
                    raise
                # a long-running watcher outlives one bad cycle (e.g. the registry is down)
                echo(f"[watch] cycle failed: {e}; next cycle in {job.monitor.interval}")
            manual = False  # a manual trigger asks for one retrain
            if once or stop.wait(job.monitor.interval_s):
                break
    finally:
        shutdown_ray()
    echo("[watch] stopped")


def _on_signals(stop: threading.Event) -> None:
    """The first SIGTERM/SIGINT ends the loop after the current cycle; a second SIGINT
    interrupts the cycle itself."""
    def handle(signum, frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        echo(f"[watch] {signal.Signals(signum).name}: stopping after this cycle")

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
