"""Small jobs: `mlrt run jobs/digits.yaml` vs the plain PyTorch script a user would write.

    .venv/bin/python benchmarks/small_job.py              # 3 runs each, medians (~4 min)
    .venv/bin/python benchmarks/small_job.py --repeat 1

Each run is a fresh process, imports included, timed from outside (wall clock):
- script: the same model as jobs/digits.yaml (torch MLP 64 -> 128 -> 64 -> 10, dropout 0.1,
  Adam lr 0.003, batch 64, 20 epochs, standard-scaled features, a stratified 20% test split),
  one process, no checkpoints, no registry; prints its test accuracy.
- mlrt: `mlrt run jobs/digits.yaml` into a temp storage (sqlite MLflow): everything the spec
  asks for (checks, profile, training with checkpoints, evaluation, gate, registration; at
  this size the spec's `workers: 2` trains in one process, see train.single_process_below_mb).
- csv1k: `mlrt run` of a 1,000-row CSV with 6 numeric features (1 Train worker, 40 epochs),
  the size of a first job on a user's own file. Target: <= 15 s end to end.
Runs alternate (script, mlrt, csv1k, script, ...) so that the machine's drift hits all alike.
The JSON line: `ratio` (median mlrt / median script; target <= 3.0), `csv1k_s`, and mlrt's
own stage times from its summary when it prints them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLRT = str(Path(sys.executable).with_name("mlrt"))

SCRIPT = textwrap.dedent("""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    torch.manual_seed(7)
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=7,
                                                        stratify=y)
    scaler = StandardScaler().fit(x_train)
    x_train = torch.tensor(scaler.transform(x_train), dtype=torch.float32)
    x_test = torch.tensor(scaler.transform(x_test), dtype=torch.float32)
    y_train = torch.tensor(y_train)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(20):
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), 64):
            batch = order[i:i + 64]
            optimizer.zero_grad()
            loss_fn(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1).numpy() == y_test).mean()
    print(f"accuracy {accuracy:.4f}")
""")

CSV_SPEC = """
name: small-csv
task: classification
storage: {storage}
data:
  source: {{kind: csv, path: {csv}}}
  target: label
  split: {{test: 0.2, validation: 0.0, seed: 1}}
  preprocess:
    - {{op: standard_scale, columns: numeric}}
model: {{kind: torch_mlp, hidden: [32]}}
train: {{epochs: 40, batch_size: 32, lr: 0.01, workers: 1}}
evaluate:
  metrics: [accuracy]
  gate: {{metric: accuracy, min: 0.5}}
register: {{alias: champion}}
"""


def write_csv(path: Path, rows: int = 1000) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 6))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    frame["label"] = np.where(x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0, "yes", "no")
    frame.to_csv(path, index=False)


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                         f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (medians)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"script": [], "mlrt": [], "csv1k": []}
    with tempfile.TemporaryDirectory(prefix="mlrt-small-job-") as tmp_name:
        tmp = Path(tmp_name)
        script = tmp / "digits_torch.py"
        script.write_text(SCRIPT)
        csv = tmp / "small.csv"
        write_csv(csv)
        for i in range(args.repeat):
            elapsed, out = timed([sys.executable, str(script)], tmp)
            times["script"].append(elapsed)
            print(f"run {i + 1}: script {elapsed:.1f} s ({out.strip()})", flush=True)
            storage = tmp / f"store-{i}"
            elapsed, _ = timed([MLRT, "run", str(ROOT / "jobs/digits.yaml"), "--set",
                                f"storage={storage}"], tmp)
            times["mlrt"].append(elapsed)
            print(f"run {i + 1}: mlrt run jobs/digits.yaml {elapsed:.1f} s", flush=True)
            spec = tmp / f"csv-{i}.yaml"
            spec.write_text(CSV_SPEC.format(storage=tmp / f"csv-store-{i}", csv=csv))
            elapsed, _ = timed([MLRT, "run", str(spec)], tmp)
            times["csv1k"].append(elapsed)
            print(f"run {i + 1}: mlrt run (1k-row CSV) {elapsed:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n## Small jobs (wall clock, imports included; medians of {args.repeat})\n")
    print("| job | median s | runs |")
    print("|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.1f} | {', '.join(f'{t:.1f}' for t in v)} |")
    print(json.dumps({"benchmark": "small_job", "ratio": round(med["mlrt"] / med["script"], 2),
                      "script_s": round(med["script"], 1), "mlrt_s": round(med["mlrt"], 1),
                      "csv1k_s": round(med["csv1k"], 1), "runs": args.repeat}))


if __name__ == "__main__":
    main()
