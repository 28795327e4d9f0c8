"""Drift detection: mlrt (training profile + per-block partials) vs Evidently's DataDriftPreset
with its defaults, on the same reference and the same windows, in one run.

    # Evidently 0.7.23 does not import under pandas 3 (it uses a pandas internal that pandas 3
    # removed), so it gets its own small env; mlrt runs in the project's .venv
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install "evidently==0.7.23" "pandas>=2.2,<3" pyarrow psutil
    .venv/bin/python benchmarks/drift_detect.py --evidently-python .venv-bench/bin/python
    .venv/bin/python benchmarks/drift_detect.py ... --sizes 500,5000 --windows 10    # quick
    .venv/bin/python benchmarks/drift_detect.py ... --scale                          # speed

Accuracy (default): a 100k-row training set (normal, skewed, discrete, nullable numeric and
categorical features of 2-40 values); windows from the same distribution and with known shifts
(mean +0.25 sd and +0.5 sd of `x_normal`, a changed category mix of `c_color`, 10% more nulls
in `x_nullable`) at 500, 5,000 and 500,000 rows, 50 windows each. mlrt gets only the profile
built by runtime.data.profile and scores windows fed in blocks through window_partial and
merge_window with the default monitor.drift settings; Evidently gets the raw reference rows.
A false alarm is a window from the training distribution with any feature flagged; a
detection is the shifted feature flagged. Each side runs in its own process (both regenerate
the same seeded data; a checksum proves it).

Scale (--scale): 10M captured rows x 32 features in parquet files; mlrt streams them in blocks
through the partial functions (no Ray yet), Evidently reads them into pandas and runs the
preset. Wall and CPU time (after imports; CPU is what to read on a loaded machine) and peak
RSS (psutil sampling + the child's ru_maxrss). Evidently first runs on half and all of the
first 1M rows (--probe-rows); if its peak extrapolated from those passes --memory-budget of the
available memory, or its time --time-budget, it is not run at full size and its numbers are
extrapolated (the table says so). Prints a markdown table, then one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from peak_memory import TreeSampler

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_ROWS = 100_000
COLORS = ["red", "green", "blue", "black", "white"]
COLOR_P = [0.4, 0.25, 0.15, 0.12, 0.08]
COLOR_SHIFTED = [0.25, 0.25, 0.2, 0.15, 0.15]
CITIES = [f"city{i:02d}" for i in range(40)]
NUMERIC = ["x_normal", "x_normal2", "x_lognormal", "x_count", "x_nullable"]
CATEGORICAL = ["c_color", "c_city", "c_flag"]
# scenario -> the feature it changes (None: the training distribution)
SCENARIOS = {"none": None, "mean +0.25 sd": "x_normal", "mean +0.5 sd": "x_normal",
             "category mix": "c_color", "nulls +10%": "x_nullable"}
SAMPLE_SECONDS = 0.05


# --- data (the same on both sides: numpy Generator streams are seeded per window) -------------


def make_frame(rows: int, seed: list[int], scenario: str = "none"):
    import pandas as pd

    rng = np.random.default_rng(seed)
    shift = {"mean +0.25 sd": 0.25, "mean +0.5 sd": 0.5}.get(scenario, 0.0)
    colors = COLOR_SHIFTED if scenario == "category mix" else COLOR_P
    zipf = 1 / np.arange(1, 41) ** 1.1
    frame = pd.DataFrame({
        "x_normal": rng.normal(50.0, 10.0, rows) + shift * 10.0,
        "x_normal2": rng.normal(0.0, 1.0, rows),
        "x_lognormal": rng.lognormal(3.0, 1.0, rows),
        "x_count": rng.poisson(4, rows).astype(np.float64),
        "x_nullable": rng.exponential(2.0, rows),
        "c_color": np.asarray(COLORS, dtype=object)[rng.choice(5, rows, p=colors)],
        "c_city": np.asarray(CITIES, dtype=object)[rng.choice(40, rows, p=zipf / zipf.sum())],
        "c_flag": np.asarray(["no", "yes"], dtype=object)[(rng.random(rows) < 0.1).astype(int)],
    })
    null_share = 0.11 if scenario == "nulls +10%" else 0.01
    frame["x_nullable"] = frame["x_nullable"].mask(rng.random(rows) < null_share)
    return frame


def checksum(frame) -> float:
    return round(float(frame[NUMERIC].sum().sum()) + float((frame["c_color"] == "red").sum()), 3)


def window_seed(args: argparse.Namespace, scenario: str, size: int, index: int) -> list[int]:
    return [args.seed, list(SCENARIOS).index(scenario), size, index]


# --- the two sides of the accuracy run (each in its own process: --side) ---------------------


def mlrt_detector(reference):
    from runtime.data.profile import profile_frame
    from runtime.monitoring.drift import merge_window, score_drift, window_partial

    types = {**{c: "numeric" for c in NUMERIC}, **{c: "categorical" for c in CATEGORICAL}}
    profile = json.loads(json.dumps(profile_frame(reference, types)))  # as stored: JSON

    def detect(frame, block_rows: int) -> list[str]:
        partials = [window_partial(frame.iloc[i:i + block_rows], profile)
                    for i in range(0, len(frame), block_rows)]
        return score_drift(merge_window(partials), profile)["drifted_features"]
    return detect


def evidently_detector(reference):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    ref = Dataset.from_pandas(reference, data_definition=definition)

    def detect(frame, _block_rows: int) -> list[str]:
        current = Dataset.from_pandas(frame, data_definition=definition)
        snapshot = Report([DataDriftPreset()]).run(current, ref)
        return evidently_drifted(snapshot.dict())
    return detect


def evidently_drifted(snapshot: dict) -> list[str]:
    """Columns whose ValueDrift passed its test: a distance >= threshold, or for the p-value
    tests Evidently uses on small references, p < threshold."""
    drifted = []
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        value, threshold = metric["value"], config["threshold"]
        is_p_value = "p_value" in config["method"]
        if (value < threshold) if is_p_value else (value >= threshold):
            drifted.append(config["column"])
    return drifted


def tasks(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(scenario, size, windows) in report order; Evidently may get fewer large windows."""
    windows, large = args.windows, None
    if args.side == "evidently":
        windows = min(windows, args.evidently_windows or windows)
        large = args.evidently_windows_large
    return [(scenario, size, min(windows, large) if large and size > 100_000 else windows)
            for scenario in SCENARIOS for size in args.sizes]


def assigned(costs: list[int], jobs: int, job: int) -> set[int]:
    """The tasks of process `job`: largest first to the least loaded (balanced, fixed)."""
    loads, owner = [0] * jobs, {}
    for number in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        owner[number] = loads.index(min(loads))
        loads[owner[number]] += costs[number]
    return {number for number, j in owner.items() if j == job}


def run_side(args: argparse.Namespace) -> dict:
    reference = make_frame(REFERENCE_ROWS, [args.seed, 99])
    detect = (mlrt_detector if args.side == "mlrt" else evidently_detector)(reference)
    results, todo = [], tasks(args)
    # a window costs its rows plus a fixed part (Evidently: ~5 s a window even at 500 rows)
    mine = assigned([(size + 50_000) * windows for _, size, windows in todo], args.jobs, args.job)
    for number, (scenario, size, windows) in enumerate(todo):
        if number not in mine:
            continue  # another process of this side has it
        flagged, sums, seconds = [], [], 0.0
        for index in range(windows):
            frame = make_frame(size, window_seed(args, scenario, size, index), scenario)
            start = time.perf_counter()
            flagged.append(detect(frame, args.block_rows))
            seconds += time.perf_counter() - start
            sums.append(checksum(frame))
        results.append({"task": number, "scenario": scenario, "size": size, "flagged": flagged,
                        "checksums": sums, "seconds": seconds})
    return {"side": args.side, "results": results}


# --- the scale run ----------------------------------------------------------------------------


def scale_columns(features: int) -> tuple[list[str], list[str]]:
    categorical = [f"c{i:02d}" for i in range(max(features // 8, 1))]
    return [f"f{i:02d}" for i in range(features - len(categorical))], categorical


def write_scale_data(directory: Path, rows: int, features: int, file_rows: int) -> None:
    """Reference (100k rows) and the captured window in parquet files, written file by file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    numeric, categorical = scale_columns(features)
    values = np.asarray([f"v{i}" for i in range(12)], dtype=object)

    def table(n: int, rng) -> pa.Table:
        columns = {name: (rng.normal(0, 1, n) if k % 2 else rng.lognormal(0, 1, n))
                   for k, name in enumerate(numeric)}
        columns.update({name: pa.array(values[rng.integers(0, 12, n)]).dictionary_encode()
                        for name in categorical})
        return pa.table(columns)
    rng = np.random.default_rng(7)
    pq.write_table(table(REFERENCE_ROWS, rng), directory / "reference.parquet")
    (directory / "window").mkdir()
    for i, start in enumerate(range(0, rows, file_rows)):
        pq.write_table(table(min(file_rows, rows - start), rng),
                       directory / "window" / f"part-{i:04d}.parquet")


def cpu_seconds() -> float:
    """User + system CPU of this process (all threads): unlike wall time, barely moved by
    other processes on a loaded machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scale_mlrt(directory: Path, args: argparse.Namespace) -> dict:
    import pyarrow.parquet as pq

    from runtime.monitoring.drift import merge_window, score_drift, window_partial

    profile = json.loads((directory / "profile.json").read_text())
    start, cpu = time.perf_counter(), cpu_seconds()
    partials = []
    for path in sorted((directory / "window").glob("*.parquet"))[:args.files]:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=args.block_rows):
            partials.append(window_partial(batch_to_table(batch), profile))
    report = score_drift(merge_window(partials), profile)
    return {"wall": time.perf_counter() - start, "cpu": cpu_seconds() - cpu,
            "drifted": report["drifted_features"],
            "blocks": len(partials)}


def batch_to_table(batch):
    import pyarrow as pa

    return pa.Table.from_batches([batch])


def scale_evidently(directory: Path, args: argparse.Namespace) -> dict:
    import pandas as pd
    import psutil
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numeric, categorical = scale_columns(args.features)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    baseline = psutil.Process().memory_info().rss  # interpreter + imports: not per row
    start, cpu = time.perf_counter(), cpu_seconds()
    files = sorted((directory / "window").glob("*.parquet"))[:args.files]
    current = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    reference = pd.read_parquet(directory / "reference.parquet")
    for frame in (current, reference):  # Evidently wants plain object columns, not categoricals
        for name in categorical:
            frame[name] = frame[name].astype(object)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition))
    return {"wall": time.perf_counter() - start, "cpu": cpu_seconds() - cpu,
            "drifted": evidently_drifted(snapshot.dict()), "rows": len(current),
            "baseline_rss": baseline}


def run_child(python: str, argv: list[str], measure: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([python, __file__, *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    sampler = TreeSampler(child.pid, SAMPLE_SECONDS)
    if measure:
        sampler.start()
    out, err = child.communicate()
    if measure:
        sampler.stop()
    if child.returncode != 0:
        sys.exit(f"{' '.join(argv[:2])} failed ({child.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = max(sampler.peak_rss, result.pop("maxrss", 0))
    return result


def child_main(args: argparse.Namespace) -> None:
    if args.side:
        result = run_side(args)
    else:
        run = scale_mlrt if args.scale_side == "mlrt" else scale_evidently
        result = run(Path(args.dir), args)
    # this process's own peak: the sampler may miss a short spike between samples
    result["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


# --- the accuracy report ----------------------------------------------------------------------


def rates(results: list[dict]) -> dict[tuple[str, int], dict]:
    """Per (scenario, size): the share of windows that flagged the target (any feature for
    the training distribution) and that flagged some other feature."""
    out = {}
    for r in results:
        target = SCENARIOS[r["scenario"]]
        hit = [(target in f) if target else bool(f) for f in r["flagged"]]
        other = [bool(set(f) - {target}) for f in r["flagged"]]
        out[(r["scenario"], r["size"])] = {"rate": float(np.mean(hit)),
                                           "other": float(np.mean(other)),
                                           "windows": len(r["flagged"]),
                                           "seconds": r["seconds"] / len(r["flagged"])}
    return out


def accuracy_table(mlrt: dict, evidently: dict, args: argparse.Namespace) -> list[str]:
    lines = ["| window | rows | windows | mlrt | Evidently | mlrt / Evidently | other features "
             "flagged (mlrt / Evidently) | s per window (mlrt / Evidently) |",
             "|---|---|---|---|---|---|---|---|"]
    for (scenario, size), m in mlrt.items():
        e = evidently[(scenario, size)]
        what = "false alarms" if SCENARIOS[scenario] is None else "detected"
        ratio = f"{m['rate'] / e['rate']:.2f}" if e["rate"] else "-"
        count = (f"{m['windows']}" if m["windows"] == e["windows"]
                 else f"{m['windows']} / {e['windows']}")
        lines.append(f"| {scenario} ({what}) | {size:,} | {count} | {m['rate']:.0%} | "
                     f"{e['rate']:.0%} | {ratio} | {m['other']:.0%} / {e['other']:.0%} | "
                     f"{m['seconds']:.3f} / {e['seconds']:.3f} |")
    lines.append(f"\nA false alarm is any feature flagged on a window of the training "
                 f"distribution; 'windows' a / b: mlrt / Evidently (Evidently needs ~30 s a "
                 f"window at 500k rows). Both sides at once, {args.jobs} process(es) each.")
    return lines


def accuracy_summary(mlrt: dict, evidently: dict, sizes: list[int]) -> dict:
    def worst_false_alarm(r: dict) -> float:
        return max(r[("none", s)]["rate"] for s in sizes)

    def by(r: dict, scenario: str) -> dict:
        return {str(s): r[(scenario, s)]["rate"] for s in sizes}
    big = [s for s in sizes if s >= 5000]
    half_sd = min((mlrt[("mean +0.5 sd", s)]["rate"] for s in big), default=None)
    summary = {
        "benchmark": "drift_detect",
        "false_alarm_rate": worst_false_alarm(mlrt),  # the worst window size
        "detection_rate_05sd_5k": mlrt[("mean +0.5 sd", 5000)]["rate"]
        if 5000 in sizes else None,
        "evidently_false_alarm_rate": worst_false_alarm(evidently),
        "evidently_detection_rate_05sd_5k": evidently[("mean +0.5 sd", 5000)]["rate"]
        if 5000 in sizes else None,
        "false_alarm_rate_by_size": by(mlrt, "none"),
        "evidently_false_alarm_rate_by_size": by(evidently, "none"),
        "detection": {s: by(mlrt, s) for s in SCENARIOS if SCENARIOS[s]},
        "evidently_detection": {s: by(evidently, s) for s in SCENARIOS if SCENARIOS[s]},
    }
    summary["targets_met"] = {
        "false_alarms_le_1pct_every_size": summary["false_alarm_rate"] <= 0.01,
        "detection_05sd_ge_95pct_from_5k": half_sd is not None and half_sd >= 0.95}
    return summary


def run_side_jobs(side: str, python: str, args: argparse.Namespace) -> list[dict]:
    """One side's windows over --jobs processes at once; results in report order."""
    common = ["--side", side, "--sizes", ",".join(map(str, args.sizes)), "--windows",
              str(args.windows), "--seed", str(args.seed), "--block-rows", str(args.block_rows),
              "--jobs", str(args.jobs)]
    common += ["--evidently-windows", str(args.evidently_windows),
               "--evidently-windows-large", str(args.evidently_windows_large)]
    outputs: list[dict] = []
    threads = [threading.Thread(target=lambda j=j: outputs.append(
        run_child(python, [*common, "--job", str(j)]))) for j in range(args.jobs)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(outputs) != args.jobs:
        sys.exit(f"{side}: a process failed")
    print(f"{side}: {time.perf_counter() - start:.0f}s", file=sys.stderr)
    return sorted((r for out in outputs for r in out["results"]), key=lambda r: r["task"])


def run_accuracy(args: argparse.Namespace) -> None:
    sides: dict[str, list[dict]] = {}  # both sides at once: timings are not the point here
    threads = [threading.Thread(target=lambda s=side, p=python: sides.update(
        {s: run_side_jobs(s, p, args)})) for side, python in
        (("mlrt", sys.executable), ("evidently", args.evidently_python))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mlrt, evidently = sides["mlrt"], sides["evidently"]
    for m, e in zip(mlrt, evidently, strict=True):
        if m["checksums"][:len(e["checksums"])] != e["checksums"]:
            sys.exit(f"the two sides saw different data for {m['scenario']} at {m['size']} "
                     "rows (numpy versions?)")
    mlrt_rates, evidently_rates = rates(mlrt), rates(evidently)
    print("\n".join(accuracy_table(mlrt_rates, evidently_rates, args)))
    print(json.dumps(accuracy_summary(mlrt_rates, evidently_rates, args.sizes)))


# --- the scale report -------------------------------------------------------------------------


def evidently_plan(args: argparse.Namespace, directory: Path, files: int) -> dict:
    """Run Evidently on the first half and all of --probe-rows; run it on everything only if
    its peak, extrapolated on the line through the two probes, fits the memory budget. Else
    report the extrapolation of time and memory (a line: fixed costs count once; its sorts are
    n log n, so a line flatters Evidently)."""
    import psutil

    probe_files = max(1, min(files, args.probe_rows // args.file_rows))
    probes = [run_child(args.evidently_python, _scale_argv("evidently", directory, args, n),
                        measure=True) for n in sorted({max(probe_files // 2, 1), probe_files})]
    wall, cpu, peak = (_extrapolate(probes, key, args.rows) for key in ("wall", "cpu", "peak_rss"))
    budget = args.memory_budget * psutil.virtual_memory().available
    if probe_files == files or (peak <= budget and wall <= args.time_budget):
        full = probes[-1] if probe_files == files else run_child(
            args.evidently_python, _scale_argv("evidently", directory, args, files), True)
        return {**full, "extrapolated": None}
    measured = " and ".join(f"{p['rows']:,}" for p in probes)
    note = (f"not run on all rows: estimated peak {_gib(peak)} (budget {_gib(budget)}: "
            f"{args.memory_budget:.0%} of {_gib(psutil.virtual_memory().available)} available), "
            f"estimated {wall:.0f} s (budget {args.time_budget:.0f} s); time and memory "
            f"extrapolated from runs on {measured} rows")
    return {"wall": wall, "cpu": cpu, "peak_rss": peak, "drifted": probes[-1]["drifted"],
            "extrapolated": note}


def _extrapolate(probes: list[dict], key: str, rows: int) -> float:
    last = probes[-1]
    if len(probes) == 1:
        return last[key] * rows / last["rows"]
    slope = (last[key] - probes[0][key]) / (last["rows"] - probes[0]["rows"])
    return last[key] + max(slope, 0.0) * (rows - last["rows"])


def _scale_argv(side: str, directory: Path, args: argparse.Namespace, files: int) -> list[str]:
    return ["--scale-side", side, "--dir", str(directory), "--files", str(files),
            "--features", str(args.features), "--block-rows", str(args.block_rows)]


def run_scale(args: argparse.Namespace) -> None:
    import pandas as pd

    from runtime.data.profile import profile_frame

    with tempfile.TemporaryDirectory(prefix="mlrt-bench-drift-") as tmp:
        directory = Path(tmp)
        start = time.perf_counter()
        write_scale_data(directory, args.rows, args.features, args.file_rows)
        reference = pd.read_parquet(directory / "reference.parquet")
        numeric, categorical = scale_columns(args.features)
        types = {**{c: "numeric" for c in numeric}, **{c: "categorical" for c in categorical}}
        (directory / "profile.json").write_text(json.dumps(profile_frame(reference, types)))
        del reference
        files = len(list((directory / "window").glob("*.parquet")))
        print(f"data: {args.rows:,} x {args.features} in {files} files, "
              f"{time.perf_counter() - start:.0f}s", file=sys.stderr)
        mlrt = run_child(sys.executable, _scale_argv("mlrt", directory, args, files), True)
        evidently = (evidently_plan(args, directory, files) if not args.skip_evidently
                     else None)
    print("\n".join(scale_table(args, mlrt, evidently)))
    print(json.dumps(scale_summary(args, mlrt, evidently)))


def scale_table(args: argparse.Namespace, mlrt: dict, evidently: dict | None) -> list[str]:
    lines = [f"| {args.rows:,} rows x {args.features} features | wall s | CPU s | rows/s (wall) "
             "| peak RSS | features flagged |", "|---|---|---|---|---|---|"]
    for name, r in (("mlrt partials (1 process, no Ray)", mlrt), ("Evidently", evidently)):
        if r is None:
            lines.append(f"| {name} | skipped (--skip-evidently) | | | | |")
            continue
        lines.append(f"| {name}{' (extrapolated)' if r.get('extrapolated') else ''} | "
                     f"{r['wall']:.1f} | {r['cpu']:.1f} | {args.rows / r['wall']:,.0f} | "
                     f"{_gib(r['peak_rss'])} | {len(r['drifted'])} |")
    if evidently:
        lines.append(f"| Evidently / mlrt | {evidently['wall'] / mlrt['wall']:.1f}x | "
                     f"{evidently['cpu'] / mlrt['cpu']:.1f}x | | "
                     f"mlrt {mlrt['peak_rss'] / evidently['peak_rss']:.3f}x | |")
        if evidently.get("extrapolated"):
            lines.append(f"\nEvidently {evidently['extrapolated']}.")
    return lines


def scale_summary(args: argparse.Namespace, mlrt: dict, evidently: dict | None) -> dict:
    out = {"benchmark": "drift_detect_scale", "rows": args.rows, "features": args.features,
           "mlrt_seconds": round(mlrt["wall"], 2), "mlrt_cpu_seconds": round(mlrt["cpu"], 2),
           "mlrt_peak_rss": mlrt["peak_rss"], "speedup_vs_evidently": None,
           "memory_ratio": None}
    if evidently:
        out.update({"evidently_seconds": round(evidently["wall"], 2),
                    "evidently_cpu_seconds": round(evidently["cpu"], 2),
                    "evidently_peak_rss": int(evidently["peak_rss"]),
                    "evidently_extrapolated": evidently.get("extrapolated"),
                    "speedup_vs_evidently": round(evidently["wall"] / mlrt["wall"], 2),
                    "speedup_cpu_vs_evidently": round(evidently["cpu"] / mlrt["cpu"], 2),
                    "memory_ratio": round(mlrt["peak_rss"] / evidently["peak_rss"], 4)})
        out["targets_met"] = {"speedup_ge_10x": out["speedup_vs_evidently"] >= 10,
                              "memory_le_025x": out["memory_ratio"] <= 0.25}
    return out


def _gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[500, 5000, 500_000], help="window sizes, comma-separated")
    parser.add_argument("--windows", type=int, default=50, help="windows per scenario and size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="processes per side at once")
    parser.add_argument("--evidently-windows", type=int, default=0,
                        help="Evidently's windows per scenario and size (0: --windows)")
    parser.add_argument("--evidently-windows-large", type=int, default=0,
                        help="Evidently's windows per scenario above 100k rows (0: --windows)")
    parser.add_argument("--block-rows", type=int, default=100_000,
                        help="rows per block fed to window_partial")
    parser.add_argument("--evidently-python", default=sys.executable,
                        help="the python of an env with evidently (default: this one)")
    parser.add_argument("--scale", action="store_true", help="the speed and memory run")
    parser.add_argument("--rows", type=int, default=10_000_000, help="--scale: window rows")
    parser.add_argument("--features", type=int, default=32, help="--scale: features")
    parser.add_argument("--file-rows", type=int, default=500_000, help="--scale: rows per file")
    parser.add_argument("--probe-rows", type=int, default=1_000_000,
                        help="--scale: rows of Evidently's first run, the memory estimate's base")
    parser.add_argument("--memory-budget", type=float, default=0.6,
                        help="--scale: share of available memory Evidently may be run with")
    parser.add_argument("--time-budget", type=float, default=900,
                        help="--scale: longest estimated Evidently run done at full size (s)")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--side", choices=["mlrt", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--scale-side", choices=["mlrt", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--job", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--files", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side or args.scale_side:
        child_main(args)
    elif args.scale:
        run_scale(args)
    else:
        run_accuracy(args)


if __name__ == "__main__":
    main()
