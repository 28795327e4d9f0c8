"""Train stage: Ray Train's TorchTrainer for torch models, a Ray task for scikit-learn ones.

The torch loop itself is runtime/training/loop.py: one loop for Ray Train workers
(`train_loop`, data shards and DDP) and single-worker Tune trials (`trial_loop`, in the trial's
own process: a trial does not pay ~15 s for a worker group). This module builds what feeds it
(model-ready datasets, the loop's config, the TorchTrainer) and reads back its result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runtime.data.scan import to_frame
from runtime.errors import TrainingError
from runtime.features.apply import transform_frame, transform_matrix
from runtime.spec import ModelSpec, Train
from runtime.training.loop import PROGRESS_FILE, LoopConfig, train_loop


@dataclass
class TrainOutput:
    model: Any  # trained torch.nn.Module (on CPU) or fitted estimator
    history: list[dict] = field(default_factory=list)  # one metrics dict per epoch
    restarts: int = 0  # how many times training resumed from a checkpoint


# --- data for the torch loop -----------------------------------------------------------------


def to_training_batch(batch, state: dict, target: str, classes: list | None) -> dict:
    """Raw rows (a pyarrow batch) -> {"x": float32 matrix, "y": class index or float target}.
    The matrix comes straight from the Arrow buffers (no pandas round trip)."""
    x = transform_matrix(state, batch)
    labels = batch.column(target).to_numpy()
    if classes is None:
        y = labels.astype(np.float32)
    else:
        y = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
    return {"x": x, "y": y}


def training_datasets(table, state: dict) -> dict:
    """Ray Datasets of model-ready batches for the train and validation splits (lazy: each
    worker streams its shard from the source)."""
    datasets = {}
    for name in ("train", "validation"):
        if table.split_rows[name]:
            datasets[name] = table.dataset(name).map_batches(
                to_training_batch, batch_format="pyarrow",
                fn_kwargs={"state": state, "target": table.target, "classes": table.classes},
            )
    return datasets


def training_arrays(table, state: dict) -> dict:
    """The model-ready train (and validation) splits read whole, for small data: from the
    rows in memory when the table holds them, else through `training_datasets`."""
    if table.frames is None:
        return {k: model_arrays(ds) for k, ds in training_datasets(table, state).items()}
    import pyarrow as pa

    return {name: to_training_batch(pa.Table.from_pandas(table.frames[name], preserve_index=False),
                                    state, table.target, table.classes)
            for name in ("train", "validation") if table.split_rows[name]}


def model_arrays(dataset) -> dict:
    """A small model-ready dataset read whole: {"x": matrix, "y": targets} (for a loop that
    trains in one process and keeps its data in memory)."""
    import ray

    parts = ray.get(dataset.to_numpy_refs())
    return {k: np.concatenate([p[k] for p in parts]) for k in ("x", "y")}


# --- entry points (driver side) --------------------------------------------------------------


def loop_config(spec: Train, model_spec: ModelSpec, n_in: int, classes: list | None,
                has_validation: bool, cache_shards: bool) -> LoopConfig:
    """What the training loop needs besides its data (the same for Train and Tune)."""
    return LoopConfig(train=spec, model=model_spec, n_in=n_in,
                      n_out=len(classes) if classes is not None else 1, classes=classes,
                      has_validation=has_validation, cache_shards=cache_shards)


def torch_trainer(config: LoopConfig, datasets: dict, storage_path: str, run_name: str,
                  callbacks: list | None = None):
    """A TorchTrainer running `train_loop` on `train.workers` workers (used for plain training
    and for each multi-worker Tune trial)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from runtime.data.fs import train_storage

    spec = config.train
    # a URI (s3://) goes to Ray as a path on mlrt's filesystem, which honours AWS_ENDPOINT_URL
    path, filesystem = train_storage(storage_path)
    return TorchTrainer(
        train_loop,
        train_loop_config={"loop": config},
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.workers, use_gpu=spec.use_gpu,
            resources_per_worker={"CPU": spec.cpus_per_worker},
            placement_strategy=spec.placement.upper(),  # PACK | SPREAD (soft: best effort)
        ),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )


def train_torch(spec: Train, model_spec: ModelSpec, datasets: dict, n_in: int,
                classes: list | None, storage_path: str, run_name: str,
                cache_shards: bool = False) -> TrainOutput:
    import ray.train

    config = loop_config(spec, model_spec, n_in, classes, "validation" in datasets, cache_shards)
    trainer = torch_trainer(config, datasets, storage_path, run_name)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        raise _training_failed(spec, e) from e
    if result.checkpoint is None:
        raise TrainingError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        return load_output(Path(d), model_spec, n_in, config.n_out)


def train_torch_in_task(spec: Train, model_spec: ModelSpec, arrays: dict, n_in: int,
                        classes: list | None, storage_path: str, run_name: str) -> TrainOutput:
    """Small data: the same loop in one Ray task with one worker's resources, on the arrays
    of `training_arrays`. No worker group, process group or Ray Data stream to start (Ray Train
    spends ~10 s on those before the first batch, on a 2-core machine). Checkpoints go where
    Ray Train puts them; a task whose process dies is run again (`train.max_failures`) and
    resumes from the last one."""
    import ray

    from runtime.training.loop import _StoredCheckpoint, checkpoint_store, task_loop

    config = loop_config(spec, model_spec, n_in, classes, "validation" in arrays, True)
    task = ray.remote(num_cpus=spec.cpus_per_worker, num_gpus=1 if spec.use_gpu else 0,
                      max_retries=spec.max_failures, retry_exceptions=True)(task_loop)
    root = f"{storage_path.rstrip('/')}/{run_name}"
    try:
        last = ray.get(task.remote(config, arrays, root, max(1, int(spec.cpus_per_worker))))
    except ray.exceptions.RayError as e:
        raise _training_failed(spec, e) from e
    with _StoredCheckpoint(checkpoint_store(root)[0], last).as_directory() as d:
        return load_output(Path(d), model_spec, n_in, config.n_out)


def load_output(directory: Path, model_spec: ModelSpec, n_in: int, n_out: int) -> TrainOutput:
    """The trained model and its history from a checkpoint directory (safetensors weights)."""
    from safetensors.torch import load_file

    from runtime.training.models import build_model

    model = build_model(model_spec, n_in, n_out)
    model.load_state_dict(load_file(directory / "model.safetensors"))
    progress = json.loads((directory / PROGRESS_FILE).read_text())
    model.eval()
    return TrainOutput(model=model, history=progress["history"], restarts=progress["restarts"])


def train_sklearn(model_spec: ModelSpec, table, state: dict, n_out: int,
                  cpus: float) -> TrainOutput:
    """Fit the estimator in a Ray task (on any node with `cpus` free). scikit-learn fits in
    memory: the task reads the training split there, not in the driver."""
    import ray

    from runtime.features.apply import output_columns
    from runtime.training.models import build_model

    estimator = build_model(model_spec, len(output_columns(state)), n_out)
    fit = ray.remote(num_cpus=cpus, max_retries=0)(_fit_estimator)
    train = table.rows_of("train")
    try:
        fitted = ray.get(fit.remote(estimator, train, state, table.target))
    except ray.exceptions.RayTaskError as e:
        raise TrainingError(f"fitting {type(estimator).__name__} failed: "
                            f"{_first_line(e.cause if e.cause else e)}") from e
    return TrainOutput(model=fitted)


def _fit_estimator(estimator, train, state: dict, target: str):
    if not isinstance(train, pd.DataFrame):  # a Ray Dataset: read the split here, in the task
        import pyarrow as pa
        import ray

        train = to_frame(pa.concat_tables(ray.get(train.to_arrow_refs())))
    return estimator.fit(transform_frame(state, train), train[target].to_numpy())


def _training_failed(spec: Train, error: BaseException) -> TrainingError:
    return TrainingError(f"training failed after {spec.max_failures} retries "
                         f"(train.max_failures): {_first_line(error)}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
