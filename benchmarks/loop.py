"""The closed loop timed: from the first shifted request to the promoted version serving.

    .venv/bin/python benchmarks/loop.py                  # ~3-5 min on a quiet 2-core machine
    .venv/bin/python benchmarks/loop.py --canary-weight 0.2 --min-labeled 100

The scenario is tests/e2e/test_loop.py's (tests/e2e/loop_scenario.py): v1, a decision tree on
x1..x4 ~ N(0, 1), is served by `mlrt serve` with capture and a canary; a load client sends
traffic from a new segment (x1 ~ N(4, 1), where y = x2 > 1 instead of x2 > 0) and posts every
label via /feedback; `mlrt watch --once` runs back to back (monitor.interval 10s,
triggers.drift.min_windows 2) until a cycle promotes. Phases, from the load client's and the
watcher's own clocks (each cycle's output lines are timestamped as they arrive):

- detect:  first shifted request -> the watcher's "retrain (drift)" line (2 drifted windows,
           each cycle a fresh process: Ray start, one Ray Data monitoring pass, MLflow run)
- retrain: that line -> "canary started" (the driver on source + labeled captures, the gate,
           registration, @challenger)
- canary:  "canary started" -> the promoted version alone answering (labels for min_labeled
           canary requests, the promoting cycle, the replicas' alias poll)

Live accuracy: of v1's answers before the retrain, and of v2's once it serves alone (10 s).
Prints a markdown table, then, last, one JSON line: detect_s, retrain_s, canary_s,
accuracy_before, accuracy_after (plus total_s, cycles, requests, failed).
Wall times depend on the machine's load (a shared CI machine is slower; say so with figures).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parents[1] / "tests" / "e2e")]
from loop_scenario import SPEC, LoadClient, watch_once, write_project  # noqa: E402
from user import MLRT, mlrt, mlrt_env  # noqa: E402

from serve_apps.local import free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canary-weight", type=float, default=0.5)
    parser.add_argument("--min-labeled", type=int, default=40)
    parser.add_argument("--max-cycles", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlrt-loop-") as tmp:
        work = Path(tmp)
        write_project(work, canary_weight=args.canary_weight, min_labeled=args.min_labeled)
        result = mlrt("run", SPEC, cwd=work)
        if result.returncode:
            sys.exit(f"mlrt run failed:\n{result.stderr[-3000:]}")
        report = _timed_loop(work, args)
    rows = [("detect", report["detect_s"]), ("retrain", report["retrain_s"]),
            ("canary", report["canary_s"]), ("total", report["total_s"])]
    print("| phase | wall s |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.1f} |")
    print(f"\nlive accuracy on the shifted traffic: before {report['accuracy_before']:.3f} "
          f"(v1, {report['n_before']} answers), after {report['accuracy_after']:.3f} "
          f"(v2, {report['n_after']} answers); {report['requests']} requests, "
          f"{report['failed']} failed, {report['cycles']} watch cycles")
    print(json.dumps(report))


def _timed_loop(work: Path, args) -> dict:
    from user import wait_for_urls

    server = subprocess.Popen([MLRT, "serve", SPEC, "--port", str(free_port())], cwd=work,
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                              env=mlrt_env())
    try:
        [url] = wait_for_urls(server, 1, timeout_s=300)
        load = LoadClient(url).start()
        time.sleep(12)  # the first window is the last monitor.interval of traffic
        cycles = []
        while len(cycles) < args.max_cycles and "promote" not in [
                a for c in cycles for a in c.actions]:
            cycles.append(watch_once(work))
            if cycles[-1].returncode:
                sys.exit(f"mlrt watch failed:\n{cycles[-1].text[-3000:]}")
            time.sleep(2)
        log = "".join(c.text for c in cycles)
        detected = next((t for c in cycles if (t := c.first("retrain (drift)"))), None)
        canary = next((t for c in cycles if (t := c.first("canary started"))), None)
        if detected is None or canary is None or "promote" not in cycles[-1].actions:
            sys.exit(f"the loop did not close in {len(cycles)} cycles:\n{log[-5000:]}")
        serving = load.serving("2")
        time.sleep(10)  # v2's live accuracy on 10 s of answers
        load.stop()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
    before, n_before = load.accuracy("1", until=detected)
    after, n_after = load.accuracy("2", since=serving)
    start = load.first_request
    return {"detect_s": round(detected - start, 2), "retrain_s": round(canary - detected, 2),
            "canary_s": round(serving - canary, 2), "total_s": round(serving - start, 2),
            "accuracy_before": round(before, 4), "accuracy_after": round(after, 4),
            "n_before": n_before, "n_after": n_after, "cycles": len(cycles),
            "requests": len(load.answers), "failed": len(load.failures),
            "feedback_failed": len(load.feedback_failures)}


if __name__ == "__main__":
    main()
