"""Train stage: Ray Train's TorchTrainer for torch models, a Ray task for scikit-learn ones.

One training loop (`run_loop`) serves two callers: Ray Train workers (`train_loop`, data shards
and DDP) and single-worker Tune trials (`trial_loop`, in the trial's own process: a trial does
not pay ~15 s for a worker group). They differ only in a small session object.

The torch loop reads its shard of the train/validation datasets (Ray Data, streamed), reports
metrics every epoch, writes a checkpoint every `train.checkpoint_every` epochs (and at the end),
and on restart after a failure (`train.max_failures`) resumes from the last checkpoint.
Checkpoints hold safetensors weights; optimizer state is loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runtime.errors import TrainingError
from runtime.scan import to_frame
from runtime.spec import ModelSpec, Train
from runtime.transform import transform_frame, transform_matrix

PROGRESS_FILE = "progress.json"


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


# --- the torch training loop: one loop, run by a Ray Train worker or in a Tune trial ----------


class _TrainSession:
    """The loop's view of Ray Train: this worker's dataset shards, DDP, reports to the Train
    controller (which syncs checkpoints to storage and restarts workers from them)."""

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()

    def device(self):
        from ray.train.torch import get_device

        return get_device()

    def prepare(self, model):
        from ray.train.torch import prepare_model

        return prepare_model(model)

    def shard(self, name: str):
        import ray.train

        return ray.train.get_dataset_shard(name)

    def arrays(self, name: str):
        return None  # workers stream their shards

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()


class _TuneSession:
    """The loop's view of a Tune function trial with one worker: no worker group, no process
    group; the whole datasets are this trial's data (Ray Datasets, or for small data the
    model-ready arrays, read once by the driver: no Ray Data pipeline starts per trial);
    reports go to Tune."""

    rank, world = 0, 1

    def __init__(self, datasets: dict):
        self.datasets = datasets

    def arrays(self, name: str):
        data = self.datasets.get(name)
        if not isinstance(data, dict):
            return None
        import torch

        return torch.from_numpy(data["x"].copy()), torch.from_numpy(data["y"].copy())

    def device(self):
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare(self, model):
        return model

    def shard(self, name: str):
        data = self.datasets[name]
        return None if isinstance(data, dict) else data.iterator()

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.tune

        checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(metrics, checkpoint=checkpoint)

    def checkpoint(self):
        import ray.tune

        return ray.tune.get_checkpoint()


def train_loop(config: dict) -> None:
    """Entry point of each Ray Train worker (TorchTrainer's train_loop_per_worker)."""
    run_loop(config, _TrainSession())


def trial_loop(config: dict, datasets: dict) -> None:
    """Entry point of a single-worker Tune trial: the same loop, in the trial's own process."""
    run_loop(config, _TuneSession(datasets))


def run_loop(config: dict, session) -> None:
    import torch
    import torch.distributed as dist

    from runtime.models import build_model

    spec: Train = config["train"]
    classification = config["classes"] is not None
    torch.manual_seed(spec.seed)
    device = session.device()
    model = build_model(config["model"], config["n_in"], config["n_out"]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    start, history, restarts = _restore(session.checkpoint(), model, optimizer)
    model = session.prepare(model)
    loss_fn = torch.nn.CrossEntropyLoss() if classification else torch.nn.MSELoss()
    rank, world = session.rank, session.world
    train_shard = session.shard("train")
    val_shard = session.shard("validation") if config["has_validation"] else None
    y_dtype = torch.int64 if classification else torch.float32
    dtypes = {"x": torch.float32, "y": y_dtype}

    cached: dict[str, tuple] = {}
    for name in ("train", "validation") if config["has_validation"] else ("train",):
        preloaded = session.arrays(name)
        if preloaded is not None:
            cached[name] = tuple(t.to(device) for t in preloaded)
    shuffle = torch.Generator().manual_seed(spec.seed + rank)

    def batches(name: str, shard, train: bool):
        """Stream the shard from Ray Data; when the spec's data is small (`cache_shards`), keep
        this worker's shard in memory after the first epoch instead of re-reading it."""
        if name in cached:
            x, y = cached[name]
            order = torch.randperm(len(y), generator=shuffle) if train else torch.arange(len(y))
            for i in range(0, len(y), spec.batch_size):
                idx = order[i: i + spec.batch_size]
                yield {"x": x[idx], "y": y[idx]}
            return
        seen = []
        for batch in shard.iter_torch_batches(
            batch_size=spec.batch_size, dtypes=dtypes, device=device,
            local_shuffle_buffer_size=4 * spec.batch_size if train else None,
        ):
            if config["cache_shards"]:
                seen.append(batch)
            yield batch
        if config["cache_shards"]:
            cached[name] = (torch.cat([b["x"] for b in seen]), torch.cat([b["y"] for b in seen]))

    def run_epoch(name: str, shard, train: bool) -> tuple[float, float, float]:
        model.train(train)
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, rows
        with torch.set_grad_enabled(train):
            for batch in batches(name, shard, train):
                out = model(batch["x"])
                y = batch["y"]
                loss = loss_fn(out, y) if classification else loss_fn(out.squeeze(-1), y)
                if train:
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                n = len(y)
                correct = (out.argmax(1) == y).sum().item() if classification else 0.0
                totals += torch.tensor([loss.item() * n, correct, n], dtype=torch.float64)
        if world > 1 and dist.is_initialized():
            dist.all_reduce(totals)  # every worker saw a different shard
        loss_sum, correct, rows = totals.tolist()
        return loss_sum / max(rows, 1), correct / max(rows, 1), rows

    for epoch in range(start, spec.epochs):
        train_loss, train_acc, _ = run_epoch("train", train_shard, train=True)
        metrics = {"epoch": epoch + 1, "train_loss": train_loss}
        if classification:
            metrics["train_accuracy"] = train_acc
        if config["has_validation"]:
            val_loss, val_acc, _ = run_epoch("validation", val_shard, train=False)
            metrics["val_loss"] = val_loss
            if classification:
                metrics["val_accuracy"] = val_acc
            else:
                metrics["val_rmse"] = float(np.sqrt(val_loss))
        history.append(metrics)
        last = epoch + 1 == spec.epochs
        if rank == 0 and not config.get("quiet"):
            shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "epoch")
            print(f"epoch {epoch + 1}/{spec.epochs} {shown}", flush=True)
        if (epoch + 1) % spec.checkpoint_every == 0 or last:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    _save(Path(tmp), model, optimizer, epoch + 1, history, restarts)
                    checkpoint = tmp
                session.report(metrics, checkpoint)
        else:
            session.report(metrics, None)


def _save(directory: Path, model, optimizer, epochs_done: int, history: list, restarts: int):
    import torch
    from safetensors.torch import save_file

    inner = getattr(model, "module", model)
    save_file({k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()},
              directory / "model.safetensors")
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    progress = {"epochs_done": epochs_done, "history": history, "restarts": restarts}
    (directory / PROGRESS_FILE).write_text(json.dumps(progress))


def _restore(checkpoint, model, optimizer) -> tuple[int, list, int]:
    """Resume from the last checkpoint after a failure; (0, [], 0) on a fresh start."""
    import torch
    from safetensors.torch import load_file

    if checkpoint is None:
        return 0, [], 0
    with checkpoint.as_directory() as d:
        d = Path(d)
        model.load_state_dict(load_file(d / "model.safetensors"))
        optimizer.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
        progress = json.loads((d / PROGRESS_FILE).read_text())
    print(f"resuming from checkpoint after epoch {progress['epochs_done']}", flush=True)
    return progress["epochs_done"], progress["history"], progress["restarts"] + 1


# --- entry points (driver side) --------------------------------------------------------------


def loop_config(spec: Train, model_spec: ModelSpec, n_in: int, classes: list | None,
                has_validation: bool, cache_shards: bool) -> dict:
    """What the training loop needs besides its data (the same for Train and Tune)."""
    return {"train": spec, "model": model_spec, "n_in": n_in,
            "n_out": len(classes) if classes is not None else 1, "classes": classes,
            "has_validation": has_validation, "cache_shards": cache_shards}


def torch_trainer(config: dict, datasets: dict, storage_path: str, run_name: str,
                  callbacks: list | None = None):
    """A TorchTrainer running `train_loop` on `train.workers` workers (used for plain training
    and for each multi-worker Tune trial)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    spec: Train = config["train"]
    return TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec.workers, use_gpu=spec.use_gpu,
            resources_per_worker={"CPU": spec.cpus_per_worker},
            placement_strategy=spec.placement.upper(),  # PACK | SPREAD (soft: best effort)
        ),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path,
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
        raise TrainingError(f"training failed after {spec.max_failures} retries "
                            f"(train.max_failures): {_first_line(e)}") from e
    if result.checkpoint is None:
        raise TrainingError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        return load_output(Path(d), model_spec, n_in, config["n_out"])


def load_output(directory: Path, model_spec: ModelSpec, n_in: int, n_out: int) -> TrainOutput:
    """The trained model and its history from a checkpoint directory (safetensors weights)."""
    from safetensors.torch import load_file

    from runtime.models import build_model

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

    from runtime.models import build_model
    from runtime.transform import output_columns

    estimator = build_model(model_spec, len(output_columns(state)), n_out)
    fit = ray.remote(num_cpus=cpus, max_retries=0)(_fit_estimator)
    train = table.frames["train"] if table.frames is not None else table.dataset("train")
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
