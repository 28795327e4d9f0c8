"""Wall time of `mlrt run jobs/digits.yaml`, split by stage: mlrt's Ray settings vs Ray's defaults.

    .venv/bin/python benchmarks/digits_run.py            # 1 run each (make bench)
    .venv/bin/python benchmarks/digits_run.py --repeat 3

Baseline: the same command with Ray Train's defaults restored (controller polls every 2 s, print
patch and preemption watcher on), which mlrt otherwise changes for the jobs it starts. Each run
is a fresh `mlrt` process in a fresh directory. Prints a markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLRT = str(Path(sys.executable).with_name("mlrt"))
RAY_DEFAULTS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0", "RAY_TRAIN_ENABLE_PRINT_PATCH": "1",
                "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"}
STAGES = ("ray", "data", "preprocess", "train", "evaluate", "register", "shutdown")


def run_once(env_overrides: dict[str, str], extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mlrt-bench-") as tmp:
        shutil.copytree(ROOT / "jobs", Path(tmp) / "jobs")
        env = {**os.environ, **env_overrides}
        start = time.perf_counter()
        done = subprocess.run([MLRT, "run", "jobs/digits.yaml", *extra], cwd=tmp, env=env,
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"mlrt run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    times = {m[0]: float(m[1]) for m in re.findall(r"^\[(\w+)\] done in ([\d.]+)s", done.stderr,
                                                   re.M)}
    times["wall"] = wall
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="spec override passed to mlrt run (repeatable)")
    args = parser.parse_args()
    extra = [a for o in args.overrides for a in ("--set", o)]
    results: dict[str, list[dict[str, float]]] = {"mlrt": [], "ray defaults": []}
    for _ in range(args.repeat):  # interleave so drift on a noisy machine hits both
        results["mlrt"].append(run_once({}, extra))
        results["ray defaults"].append(run_once(RAY_DEFAULTS, extra))
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for name, runs in results.items()}
    columns = [s for s in STAGES if s in med["mlrt"]] + ["wall"]
    print(f"| config | {' | '.join(columns)} |")
    print(f"|---|{'---|' * len(columns)}")
    for name, row in med.items():
        cells = " | ".join(f"{row[c]:.1f}" if c in row else "-" for c in columns)
        print(f"| {name} | {cells} |")
    ratio = med["mlrt"]["wall"] / med["ray defaults"]["wall"]
    print(f"\nmedian of {args.repeat} run(s); wall ratio mlrt / ray defaults = {ratio:.2f}")
    print(json.dumps({"benchmark": "digits_run", "repeat": args.repeat,
                      "wall_s": round(med["mlrt"]["wall"], 2),
                      "baseline_wall_s": round(med["ray defaults"]["wall"], 2),
                      "ratio": round(ratio, 3),
                      "stages_s": {k: round(v, 2) for k, v in med["mlrt"].items()}}))


if __name__ == "__main__":
    main()
