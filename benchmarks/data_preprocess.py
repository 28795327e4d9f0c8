"""Rows/s and peak memory of preprocessing parquet: mlrt's Ray Data pipeline vs Polars' lazy
streaming engine and single-process pandas + scikit-learn, in one run.

    .venv/bin/python benchmarks/data_preprocess.py                   # 1M rows (make bench)
    .venv/bin/python benchmarks/data_preprocess.py --rows 10000000   # add --stock for Ray's Chain

Input: synthetic parquet files (32 float64 columns, one string column with 10 values, an int
label) in a temp dir. Every configuration reads them, standard-scales the numeric columns,
one-hot encodes the string column (statistics fitted on all rows) and writes parquet:

- pandas: read_parquet -> StandardScaler / OneHotEncoder (scikit-learn) -> float32 -> to_parquet
- polars (the bench extra; skipped with a printed reason when not installed): scan_parquet ->
  mean / std / categories (one streaming collect) -> scaled float32 and one-hot columns ->
  sink_parquet, streaming; the fastest single-machine peer a user would pick
- mlrt: read_parquet -> fit_state (one Ray Data pass) -> map_batches(transform_arrow) ->
  write_parquet (a dictionary for the label only), streaming (nothing materialized)
- stock (--stock): Ray Data's own Chain(StandardScaler, OneHotEncoder).fit_transform -> write

Each runs in a fresh Python process; a sampler thread here sums the RSS (and PSS, which counts
shared object-store pages once) of that process and all its descendants (for Ray: the driver,
GCS, raylet, workers). Wall and rows/s cover read -> write; starting Ray is reported apart.
pandas is skipped when rows x bytes per row x 3 exceeds 70% of available memory. Prints a
markdown table, then one JSON line: `ratio` (mlrt rows/s / pandas; target >= 1.2),
`ratio_vs_polars` (mlrt rows/s / Polars; target >= 0.5) and `rss_vs_polars` (mlrt peak RSS /
Polars; target <= 2.0), each from the median run, plus each run's ratios (`runs`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from peak_memory import TreeSampler

ROOT = Path(__file__).resolve().parents[1]
NUMERIC = [f"f{i:02d}" for i in range(32)]
CATEGORY = "cat"
LABEL = "label"
CATEGORIES = [f"v{i}" for i in range(10)]
# pandas holds the float64 input, a float64 copy for scikit-learn, the float32 output, the
# strings: ~3x the in-memory width of a row at peak
BYTES_PER_ROW = len(NUMERIC) * 8 + 16 + 8
SAMPLE_SECONDS = 0.2


# --- data ------------------------------------------------------------------------------------


def write_input(directory: Path, rows: int, files: int, seed: int = 0) -> None:
    """Synthetic parquet files, written one file at a time so the parent stays small."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    means, scales = rng.uniform(-100, 100, len(NUMERIC)), rng.uniform(0.1, 50, len(NUMERIC))
    probs = rng.dirichlet(np.ones(len(CATEGORIES)))
    edges = np.linspace(0, rows, files + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        n = int(hi - lo)
        columns = {name: rng.normal(means[k], scales[k], n) for k, name in enumerate(NUMERIC)}
        columns[CATEGORY] = pa.array(np.asarray(CATEGORIES)[rng.choice(len(CATEGORIES), n,
                                                                        p=probs)])
        columns[LABEL] = rng.integers(0, 2, n)
        pq.write_table(pa.table(columns), directory / f"part-{i:04d}.parquet")


# --- the pipelines (each runs in its own process: `--run NAME`) ------------------------------


def run_pandas(src: Path, dst: Path, _: argparse.Namespace) -> dict:
    import pandas as pd
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    start = time.perf_counter()
    frame = pd.read_parquet(src)
    x_num = StandardScaler().fit_transform(frame[NUMERIC].to_numpy(np.float64))
    encoder = OneHotEncoder(sparse_output=False, dtype=np.float32)
    x_cat = encoder.fit_transform(frame[[CATEGORY]])
    names = NUMERIC + [f"{CATEGORY}={v}" for v in encoder.categories_[0]]
    out = pd.DataFrame(np.hstack([x_num.astype(np.float32), x_cat]), columns=names)
    out[LABEL] = frame[LABEL].to_numpy()
    dst.mkdir(parents=True, exist_ok=True)
    out.to_parquet(dst / "part-0.parquet", index=False)
    return {"wall": time.perf_counter() - start}


def run_polars(src: Path, dst: Path, _: argparse.Namespace) -> dict:
    import polars as pl

    start = time.perf_counter()
    frame = pl.scan_parquet(str(src / "*.parquet"))
    stats = frame.select(
        *[pl.col(c).mean().alias(f"mean:{c}") for c in NUMERIC],
        *[pl.col(c).std(ddof=0).alias(f"std:{c}") for c in NUMERIC],
        pl.col(CATEGORY).unique().sort().implode().alias("categories"),
    ).collect(engine="streaming").row(0, named=True)
    fitted = time.perf_counter()
    columns = [((pl.col(c) - stats[f"mean:{c}"]) / (stats[f"std:{c}"] or 1.0))
               .cast(pl.Float32).alias(c) for c in NUMERIC]
    columns += [(pl.col(CATEGORY) == v).cast(pl.Float32).alias(f"{CATEGORY}={v}")
                for v in stats["categories"]]
    dst.mkdir(parents=True, exist_ok=True)
    frame.select(*columns, pl.col(LABEL)).sink_parquet(dst / "part-0.parquet")
    end = time.perf_counter()
    return {"wall": end - start, "fit": fitted - start, "transform_write": end - fitted}


def _start_ray(args: argparse.Namespace) -> float:
    import logging

    import ray

    from runtime.cluster.connect import LOCAL_ENV_DEFAULTS

    for key, value in LOCAL_ENV_DEFAULTS.items():  # what `mlrt run` sets on a local Ray
        os.environ.setdefault(key, value)
    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, object_store_memory=args.object_store_mb * 1024**2,
             include_dashboard=False, logging_level=logging.WARNING)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if args.block_mb:
        ctx.target_max_block_size = args.block_mb * 1024**2
    return time.perf_counter() - start


def run_mlrt(src: Path, dst: Path, args: argparse.Namespace) -> dict:
    import ray.data

    from runtime.features.apply import transform_arrow
    from runtime.features.fit import fit_state
    from runtime.spec import Data

    ray_init = _start_ray(args)
    ops = list(Data(source={"kind": "parquet", "path": str(src)},
                    preprocess=[{"op": "standard_scale"}, {"op": "one_hot"}]).preprocess)
    types = {**{c: "numeric" for c in NUMERIC}, CATEGORY: "categorical"}
    start = time.perf_counter()
    ds = ray.data.read_parquet(str(src))
    state = fit_state(ops, ds, types)
    fitted = time.perf_counter()
    kwargs = {"batch_size": args.batch_size} if args.batch_size else {}
    if args.concurrency:
        kwargs["concurrency"] = args.concurrency
    # the output is the float32 model matrix and the label: as mlrt's own writers do, only
    # the column that repeats gets a parquet dictionary (runtime.data.arrow.dictionary_columns)
    ds.map_batches(transform_arrow, batch_format="pyarrow",
                   fn_kwargs={"state": state, "label": LABEL}, **kwargs).write_parquet(
        str(dst), use_dictionary=[LABEL])
    end = time.perf_counter()
    return {"wall": end - start, "fit": fitted - start, "transform_write": end - fitted,
            "ray_init": ray_init}


def run_stock(src: Path, dst: Path, args: argparse.Namespace) -> dict:
    import ray.data
    from ray.data.preprocessors import Chain, OneHotEncoder, StandardScaler

    ray_init = _start_ray(args)
    start = time.perf_counter()
    ds = ray.data.read_parquet(str(src))
    chain = Chain(StandardScaler(NUMERIC), OneHotEncoder([CATEGORY]))
    transformed = chain.fit_transform(ds)
    fitted = time.perf_counter()
    transformed.write_parquet(str(dst))
    end = time.perf_counter()
    return {"wall": end - start, "fit": fitted - start, "transform_write": end - fitted,
            "ray_init": ray_init}


PIPELINES = {"pandas": run_pandas, "polars": run_polars, "mlrt": run_mlrt, "stock": run_stock}


# --- measuring a child process tree ----------------------------------------------------------


def measure(name: str, src: Path, dst: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--run", name, "--src", str(src), "--dst", str(dst),
           "--cpus", str(args.cpus), "--object-store-mb", str(args.object_store_mb),
           "--block-mb", str(args.block_mb), "--batch-size", str(args.batch_size),
           "--concurrency", str(args.concurrency)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=ROOT)
    sampler = TreeSampler(child.pid, SAMPLE_SECONDS)
    sampler.start()
    out, err = child.communicate()
    sampler.stop()
    if child.returncode != 0:
        sys.exit(f"{name} failed ({child.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = max(sampler.peak_rss, result.pop("maxrss", 0))
    result["peak_pss"] = sampler.peak_pss
    result["procs"] = len(sampler.peak_procs)
    shutil.rmtree(dst, ignore_errors=True)
    return result


def child_main(args: argparse.Namespace) -> None:
    result = PIPELINES[args.run](Path(args.src), Path(args.dst), args)
    if args.run in ("mlrt", "stock"):
        import ray

        ray.shutdown()
    # this process's own peak (the sampler may miss a short spike between samples)
    result["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


# --- report ----------------------------------------------------------------------------------


def pandas_fits(rows: int) -> tuple[bool, int, int]:
    import psutil

    need, available = rows * BYTES_PER_ROW * 3, psutil.virtual_memory().available
    return need <= 0.7 * available, need, available


def table(rows: int, results: dict[str, dict], skipped: str | None) -> list[str]:
    base = results.get("pandas")
    lines = ["| pipeline | rows/s | wall s | fit s | transform+write s | peak RSS (all procs) "
             "| peak PSS | rows/s vs pandas | RSS vs pandas |",
             "|---|---|---|---|---|---|---|---|---|"]
    if skipped:
        lines.append(f"| pandas | skipped: {skipped} | | | | | | | |")
    for name, r in results.items():
        rate = rows / r["wall"]
        vs = f"{rate / (rows / base['wall']):.2f}x" if base else "n/a"
        mem = f"{r['peak_rss'] / base['peak_rss']:.2f}x" if base else "n/a"
        lines.append(f"| {name} | {rate:,.0f} | {r['wall']:.1f} | {_opt(r, 'fit')} | "
                     f"{_opt(r, 'transform_write')} | {_gib(r['peak_rss'])} | "
                     f"{_gib(r['peak_pss'])} | {vs} | {mem} |")
    return lines


def _median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (its memory and stage times come with it)."""
    return sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]


def _opt(r: dict, key: str) -> str:
    return f"{r[key]:.1f}" if key in r else "-"


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=0, help="input files (default rows/250k)")
    parser.add_argument("--cpus", type=int, default=2, help="Ray logical CPUs")
    parser.add_argument("--object-store-mb", type=int, default=1024)
    parser.add_argument("--block-mb", type=int, default=0,
                        help="DataContext.target_max_block_size in MiB (0: Ray's default)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="rows per transform batch (0: whole blocks)")
    parser.add_argument("--concurrency", type=int, default=0, help="transform tasks (0: auto)")
    parser.add_argument("--stock", action="store_true", help="also time Ray's stock Chain")
    parser.add_argument("--repeat", type=int, default=1, help="runs per pipeline (median)")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--run", choices=sorted(PIPELINES), help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return child_main(args)

    files = args.files or max(4, args.rows // 250_000)
    with tempfile.TemporaryDirectory(prefix="mlrt-bench-prep-") as tmp:
        src, dst = Path(tmp) / "input", Path(tmp) / "output"
        src.mkdir()
        start = time.perf_counter()
        write_input(src, args.rows, files)
        print(f"input: {args.rows:,} rows in {files} parquet files "
              f"({sum(f.stat().st_size for f in src.iterdir()) / 1024**2:,.0f} MiB), "
              f"written in {time.perf_counter() - start:.1f}s", file=sys.stderr)
        fits, need, available = pandas_fits(args.rows)
        skipped = None
        if args.skip_pandas:
            skipped = "--skip-pandas"
        elif not fits:
            skipped = (f"needs ~{_gib(need)}, over 70% of {_gib(available)} available")
        polars = polars_missing()
        if polars:
            print(f"polars skipped: {polars}", file=sys.stderr)
        names = (([] if skipped else ["pandas"]) + ([] if polars else ["polars"]) + ["mlrt"]
                 + (["stock"] if args.stock else []))
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for _ in range(args.repeat):  # interleaved, so load from other users hits all alike
            for name in names:
                runs[name].append(measure(name, src, dst, args))
        results = {name: _median_run(r) for name, r in runs.items()}
    print("\n".join(table(args.rows, results, skipped)))
    ray_init = {k: round(r["ray_init"], 1) for k, r in results.items() if "ray_init" in r}
    print(f"\nray.init (not in wall): {ray_init} s; {args.cpus} Ray CPUs, object store "
          f"{args.object_store_mb} MiB, block {args.block_mb or 'default'} MiB, batch "
          f"{args.batch_size or 'block'}; median of {args.repeat}; processes at peak RSS: "
          f"{ {k: r['procs'] for k, r in results.items()} }")
    summary = {"benchmark": "data_preprocess", "rows": args.rows}
    for name, r in results.items():
        summary[f"{name}_rows_per_s"] = round(args.rows / r["wall"])
        summary[f"{name}_peak_rss"] = r["peak_rss"]
    mlrt = results["mlrt"]
    for peer, key, rss_key in (("pandas", "ratio", "rss_ratio"),
                               ("polars", "ratio_vs_polars", "rss_vs_polars")):
        base = results.get(peer)
        summary[key] = round(base["wall"] / mlrt["wall"], 3) if base else None
        summary[rss_key] = round(mlrt["peak_rss"] / base["peak_rss"], 3) if base else None
        if base:  # every run's own ratio: "in each of 3 runs" is a claim about all of them
            summary.setdefault("runs", {})[key] = [
                round(b["wall"] / m["wall"], 3) for b, m in zip(runs[peer], runs["mlrt"],
                                                                strict=True)]
    print(json.dumps(summary))


def polars_missing() -> str | None:
    try:
        import polars  # noqa: F401
    except ImportError:
        return "not installed (pip install -e '.[bench]')"
    return None


if __name__ == "__main__":
    main()
