"""ASHA vs FIFO on the same search (space, samples, seed), and the cost of a Tune trial.

    .venv/bin/python benchmarks/tune_asha.py             # 30 trials x 27 epochs, ~13 min
    .venv/bin/python benchmarks/tune_asha.py --samples 20 --epochs 9 --rows 40000   # ~4 min

Workload: a synthetic classification set sized so that one epoch of the MLP takes >= 1 s here.
Both searches run `runtime.training.tune.run_search` (mlrt's own trials: the training loop in the
trial's process) on one local Ray, one after the other, with Optuna-free random search and the
same seed, so they sample the same configurations. ASHA stops weak trials at epochs 1, 3
and 9. Async ASHA on 2 slots lets the first trials through every rung (nothing to compare
them with yet), so the saving grows with the number of trials and rungs.

Per-trial overhead: N trivial trials (1 epoch of a tiny model on digits) run through the same
path; overhead per trial = (wall x concurrent - sum of the trials' own time) / N, i.e. the
slot-seconds a trial costs beyond its work (Tune's time_total_s, measured inside the trial).
Prints a markdown table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from runtime.cluster.connect import init_ray, shutdown_ray
from runtime.data.table import load_table
from runtime.features.apply import output_columns
from runtime.features.fit import fit_state
from runtime.spec import parse_spec
from runtime.training.train import training_datasets
from runtime.training.tune import run_search


def _spec(args, storage: str, scheduler: dict, data: dict, model: dict, train: dict,
          samples: int, space: dict) -> dict:
    return {
        "name": "bench-tune", "task": "classification", "storage": storage,
        "data": {"source": data, "split": {"test": 0.1, "validation": 0.1, "seed": 1},
                 "preprocess": [{"op": "standard_scale"}]},
        "model": model,
        "train": {"workers": 1, "seed": args.seed, **train},
        "tune": {"metric": "val_accuracy", "mode": "max", "samples": samples,
                 "concurrent": args.concurrent, "scheduler": scheduler,
                 "search": {"kind": "random"}, "space": space},
    }


def search(raw: dict, name: str) -> dict:
    spec = parse_spec(raw)
    table = load_table(spec.data, spec.task)
    state = fit_state(list(spec.data.preprocess), table.dataset("train"), table.feature_types)
    n_in = len(output_columns(state))
    datasets = training_datasets(table, state)
    start = time.perf_counter()
    outcome = run_search(spec, datasets, n_in, table.classes, True, spec.storage, name)
    wall = time.perf_counter() - start
    return {"wall": wall, "best": outcome.best.last("val_accuracy"),
            "epochs": sum(len(t.history) for t in outcome.trials),
            "trials": len(outcome.trials), "work": sum(t.seconds for t in outcome.trials)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--rows", type=int, default=80_000)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--trivial", type=int, default=8, help="trivial trials for overhead")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    init_ray()
    data = {"kind": "synthetic", "rows": args.rows, "features": 32, "classes": 4, "seed": 0}
    model = {"kind": "torch_mlp", "hidden": [256, 256]}
    train = {"epochs": args.epochs, "batch_size": 64}
    space = {"train.lr": {"loguniform": [1e-5, 3e-2]}}
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="mlrt-bench-tune-") as tmp:
            # trivial trials first: they also warm up Ray's worker pool for both searches
            trivial = _spec(args, tmp, {"kind": "fifo"},
                            {"kind": "sklearn", "name": "digits"},
                            {"kind": "torch_mlp", "hidden": [8]}, {"epochs": 1},
                            args.trivial, {"train.lr": {"loguniform": [1e-3, 1e-2]}})
            results["trivial"] = search(trivial, "bench-trivial")
            for label, scheduler in (
                ("fifo", {"kind": "fifo"}),
                ("asha", {"kind": "asha", "grace_period": 1, "reduction_factor": 3}),
            ):
                raw = _spec(args, tmp, scheduler, data, model, train, args.samples, space)
                results[label] = search(raw, f"bench-{label}")
    finally:
        shutdown_ray()

    fifo, asha, trivial = results["fifo"], results["asha"], results["trivial"]
    overhead = (trivial["wall"] * args.concurrent - trivial["work"]) / trivial["trials"]
    print(f"{args.samples} trials, {args.epochs} epochs max, {args.rows} synthetic rows, "
          f"{args.concurrent} concurrent. s/epoch = the trials' own time per epoch: when it "
          "differs between the searches, the (shared) machine's load changed.\n")
    print("| search | wall (s) | best val_accuracy | epochs run | s/epoch |")
    print("|---|---|---|---|---|")
    for label in ("fifo", "asha"):
        r = results[label]
        print(f"| {label} | {r['wall']:.1f} | {r['best']:.4f} | {r['epochs']} | "
              f"{r['work'] / max(r['epochs'], 1):.2f} |")
    print(f"| ratio asha/fifo | {asha['wall'] / fifo['wall']:.2f} | gap "
          f"{fifo['best'] - asha['best']:+.4f} | {asha['epochs'] / fifo['epochs']:.2f} | |")
    print(f"\n{trivial['trials']} trivial trials: wall {trivial['wall']:.1f} s, their own work "
          f"{trivial['work']:.1f} s; overhead {overhead:.2f} s per trial slot\n")
    print(json.dumps({
        "benchmark": "tune_asha",
        "time_ratio": round(asha["wall"] / fifo["wall"], 3),
        "accuracy_gap": round(fifo["best"] - asha["best"], 4),
        "per_trial_overhead_s": round(overhead, 3),
        "fifo_wall_s": round(fifo["wall"], 1), "asha_wall_s": round(asha["wall"], 1),
        "epochs_ratio": round(asha["epochs"] / fifo["epochs"], 3),
        "epochs_fifo": fifo["epochs"], "epochs_asha": asha["epochs"],
    }))


if __name__ == "__main__":
    main()
