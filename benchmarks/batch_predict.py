"""Batch inference rows/s: `mlrt predict`'s pipeline vs a plain pandas loop, same parquet input.

    .venv/bin/python benchmarks/batch_predict.py                    # 200k rows, torch MLP
    .venv/bin/python benchmarks/batch_predict.py --rows 20000       # make bench size
    .venv/bin/python benchmarks/batch_predict.py --model logreg --actors 4 --repeat 3

Setup (not timed): a model trained on synthetic features (`torch_mlp` or a scikit-learn
LogisticRegression) is registered in a temp store; the input is `--rows` rows of the same
synthetic features in one parquet file; a local Ray is started.

Timed, each from the model's files to parquet on disk with predictions and probabilities:
- mlrt: `runtime.inference.batch.run_batch` (what `mlrt predict` runs after Ray is up): Ray Data
  read, per-block type check, a fixed pool of `--actors` model actors, parquet write, atomic rename.
- pandas: one process: Predictor.load, pd.read_parquet, Predictor.predict_frame over chunks of
  `--batch-size` rows, concat with the input, to_parquet.

Prints a markdown table (median of `--repeat` runs, interleaved), then one JSON line whose
ratio is mlrt rows/s over pandas rows/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from runtime.inference.batch import run_batch  # noqa: E402
from runtime.inference.predictor import Predictor  # noqa: E402
from runtime.registry.model_dir import fetch_model  # noqa: E402

NAME = "bench-batch"
MODELS = {
    "mlp": {"kind": "torch_mlp", "hidden": [256, 128]},
    "logreg": {"kind": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression",
               "params": {"max_iter": 300}},
}


def register_model(storage: Path, model: str, features: int) -> str:
    from runtime.pipeline.driver import run_job
    from runtime.spec import parse_spec

    spec = parse_spec({
        "name": NAME, "task": "classification", "storage": str(storage),
        "data": {"source": {"kind": "synthetic", "rows": 5000, "features": features,
                            "classes": 3, "seed": 0},
                 "split": {"test": 0.2, "validation": 0.0, "seed": 0},
                 "preprocess": [{"op": "standard_scale"}]},
        "model": MODELS[model],
        "train": {"epochs": 2, "workers": 1, "batch_size": 256},
        "evaluate": {"gate": {"metric": "accuracy", "min": 0.0}},
    })
    summary = run_job(spec, echo=lambda _: None)
    return f"models:/{NAME}/{summary.version}"


def write_input(path: Path, rows: int, features: int, chunk: int = 50_000) -> None:
    """`rows` synthetic feature rows (x0..x{features-1}, float32) in one parquet file."""
    names = [f"x{i}" for i in range(features)]
    writer = None
    for start in range(0, rows, chunk):
        rng = np.random.default_rng([1, start])
        x = rng.standard_normal((min(chunk, rows - start), features)).astype(np.float32)
        table = pa.Table.from_pandas(pd.DataFrame(x, columns=names), preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()


def time_mlrt(uri: str, storage: Path, input_path: Path, output: Path, batch_size: int,
              actors: int) -> tuple[float, int]:
    start = time.perf_counter()
    result = run_batch(uri, str(input_path), str(output), storage=str(storage),
                       batch_size=batch_size, actors=actors, echo=lambda _: None)
    return time.perf_counter() - start, result.rows


def time_pandas(model_dir: Path, input_path: Path, output: Path,
                batch_size: int) -> tuple[float, int]:
    start = time.perf_counter()
    predictor = Predictor.load(model_dir)
    frame = pd.read_parquet(input_path)
    parts = [predictor.predict_frame(frame.iloc[i:i + batch_size])
             for i in range(0, len(frame), batch_size)]
    predicted = pd.concat(parts, ignore_index=True)
    pd.concat([frame, predicted], axis=1).to_parquet(output)
    return time.perf_counter() - start, len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs per pipeline")
    args = parser.parse_args()

    from runtime.cluster.connect import init_ray, shutdown_ray
    from runtime.registry import tracking

    with tempfile.TemporaryDirectory(prefix="mlrt-bench-batch-") as tmp_dir:
        tmp = Path(tmp_dir)
        init_ray()
        try:
            uri = register_model(tmp / "store", args.model, args.features)
            tracking.use_store(str(tmp / "store"))
            model_dir = tmp / "model"
            for name, content in fetch_model(uri).files.items():
                (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
                (model_dir / name).write_bytes(content)
            write_input(tmp / "input.parquet", args.rows, args.features)
            runs: dict[str, list[float]] = {"mlrt": [], "pandas": []}
            for i in range(args.repeat):  # interleaved: drift on a noisy machine hits both
                seconds, rows = time_mlrt(uri, tmp / "store", tmp / "input.parquet",
                                          tmp / f"mlrt-{i}", args.batch_size, args.actors)
                runs["mlrt"].append(rows / seconds)
                seconds, rows = time_pandas(model_dir, tmp / "input.parquet",
                                            tmp / f"pandas-{i}.parquet", args.batch_size)
                runs["pandas"].append(rows / seconds)
        finally:
            shutdown_ray()
    rate = {name: statistics.median(values) for name, values in runs.items()}
    ratio = rate["mlrt"] / rate["pandas"]
    print(f"| pipeline | rows | rows/s (median of {args.repeat}) | seconds |")
    print("|---|---|---|---|")
    print(f"| mlrt predict ({args.actors} actors, Ray Data) | {args.rows} | "
          f"{rate['mlrt']:,.0f} | {args.rows / rate['mlrt']:.2f} |")
    print(f"| pandas loop (1 process) | {args.rows} | {rate['pandas']:,.0f} | "
          f"{args.rows / rate['pandas']:.2f} |")
    print(f"\nmodel {args.model}, {args.features} features, batch {args.batch_size}; "
          f"ratio mlrt / pandas rows/s = {ratio:.2f}")
    print(json.dumps({"benchmark": "batch_predict", "rows": args.rows, "ratio": round(ratio, 3),
                      "model": args.model, "actors": args.actors,
                      "mlrt_rows_per_s": round(rate["mlrt"]), "pandas_rows_per_s":
                      round(rate["pandas"]), "repeat": args.repeat}))


if __name__ == "__main__":
    main()
