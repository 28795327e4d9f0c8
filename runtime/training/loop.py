"""The torch training loop: one loop, run by a Ray Train worker or inside a Tune trial.

`run_loop(config, session)` trains; the two callers differ only in a small session object:
`_TrainSession` (Ray Train: this worker's dataset shards, DDP, reports to the Train controller,
which syncs checkpoints and restarts workers from them) and `_TuneSession` (a single-worker
trial: the whole datasets, reports to Tune). The loop reads its shard of the train/validation
datasets (Ray Data, streamed), reports metrics every epoch, writes a checkpoint every
`train.checkpoint_every` epochs (and at the end), and on restart after a failure
(`train.max_failures`) resumes from the last checkpoint. Checkpoints hold safetensors weights;
optimizer state is loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.spec import ModelSpec, Train

PROGRESS_FILE = "progress.json"


@dataclass(frozen=True)
class LoopConfig:
    """What the training loop needs besides its data (the same for Ray Train and Tune)."""

    train: Train
    model: ModelSpec
    n_in: int  # model inputs after preprocessing
    n_out: int  # classes, or 1 for regression
    classes: list | None
    has_validation: bool
    cache_shards: bool  # keep each worker's shard in memory after the first epoch
    quiet: bool = False  # no per-epoch line (Tune trials: mlrt prints one line per trial)


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


class _TaskSession(_TuneSession):
    """The loop's view of one Ray task training on small data (no worker group): the
    model-ready arrays from the driver; checkpoints go to `root` on the run's storage (the
    layout Ray Train uses, `checkpoint_000004/`), the last two kept. When the task's process
    dies, Ray runs the task again and the loop resumes from the newest one."""

    def __init__(self, arrays: dict, root: str, threads: int):
        super().__init__(arrays)
        import torch

        torch.set_num_threads(threads)  # a reused worker keeps the thread count it started with
        self.fs, self.root = checkpoint_store(root)
        self.saved = sorted(self._existing())

    def _existing(self) -> list[str]:
        from pyarrow.fs import FileSelector, FileType

        found = self.fs.get_file_info(FileSelector(self.root, allow_not_found=True))
        return [f.path for f in found if f.type == FileType.Directory
                and f.base_name.startswith("checkpoint_")
                and self.fs.get_file_info(f"{f.path}/{PROGRESS_FILE}").type == FileType.File]

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir is None:
            return
        from pyarrow.fs import LocalFileSystem, copy_files

        path = f"{self.root}/checkpoint_{metrics['epoch']:06d}"
        # progress.json last: a checkpoint without it is one the process died writing
        staged = Path(checkpoint_dir)
        progress = (staged / PROGRESS_FILE).read_bytes()
        (staged / PROGRESS_FILE).unlink()
        self.fs.create_dir(path, recursive=True)
        copy_files(str(staged), path, source_filesystem=LocalFileSystem(),
                   destination_filesystem=self.fs)
        with self.fs.open_output_stream(f"{path}/{PROGRESS_FILE}") as out:
            out.write(progress)
        self.saved.append(path)
        for old in self.saved[:-2]:
            self.fs.delete_dir(old)
        self.saved = self.saved[-2:]

    def checkpoint(self):
        return _StoredCheckpoint(self.fs, self.saved[-1]) if self.saved else None


def checkpoint_store(root: str) -> tuple:
    """(pyarrow filesystem, path) of a checkpoint folder: a local folder or a URI (s3://,
    on mlrt's filesystem, which honours AWS_ENDPOINT_URL)."""
    from runtime.data.fs import train_storage

    path, filesystem = train_storage(root)
    if filesystem is None:
        from pyarrow.fs import LocalFileSystem

        filesystem = LocalFileSystem()
    return filesystem, path.rstrip("/")


class _StoredCheckpoint:
    """A checkpoint folder on storage, read through a local copy (what `_restore` and the
    driver need of ray.train.Checkpoint, without importing Ray Train in the task)."""

    def __init__(self, filesystem, path: str):
        self.fs, self.path = filesystem, path

    @contextmanager
    def as_directory(self):
        from pyarrow.fs import LocalFileSystem, copy_files

        with tempfile.TemporaryDirectory(prefix="mlrt-ckpt-") as tmp:
            copy_files(self.path, tmp, source_filesystem=self.fs,
                       destination_filesystem=LocalFileSystem())
            yield tmp


def task_loop(config: LoopConfig, arrays: dict, root: str, threads: int) -> str:
    """Entry point of the one-task training (small data): the loop in this process; returns
    the path of the last checkpoint on storage (the loop always checkpoints its last epoch)."""
    session = _TaskSession(arrays, root, threads)
    run_loop(config, session)
    return session.saved[-1]


def train_loop(config: dict) -> None:
    """Entry point of each Ray Train worker (TorchTrainer's train_loop_per_worker; Ray Train
    hands it the dict `{"loop": LoopConfig}`)."""
    run_loop(config["loop"], _TrainSession())


def trial_loop(config: LoopConfig, datasets: dict) -> None:
    """Entry point of a single-worker Tune trial: the same loop, in the trial's own process."""
    run_loop(config, _TuneSession(datasets))


def run_loop(config: LoopConfig, session) -> None:
    import torch
    import torch.distributed as dist

    from runtime.training.models import build_model

    spec = config.train
    classification = config.classes is not None
    torch.manual_seed(spec.seed)
    device = session.device()
    model = build_model(config.model, config.n_in, config.n_out).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    start, history, restarts = _restore(session.checkpoint(), model, optimizer)
    model = session.prepare(model)
    loss_fn = torch.nn.CrossEntropyLoss() if classification else torch.nn.MSELoss()
    rank, world = session.rank, session.world
    train_shard = session.shard("train")
    val_shard = session.shard("validation") if config.has_validation else None
    y_dtype = torch.int64 if classification else torch.float32
    dtypes = {"x": torch.float32, "y": y_dtype}

    cached: dict[str, tuple] = {}
    for name in ("train", "validation") if config.has_validation else ("train",):
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
            if config.cache_shards:
                seen.append(batch)
            yield batch
        if config.cache_shards:
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
        if config.has_validation:
            val_loss, val_acc, _ = run_epoch("validation", val_shard, train=False)
            metrics["val_loss"] = val_loss
            if classification:
                metrics["val_accuracy"] = val_acc
            else:
                metrics["val_rmse"] = float(np.sqrt(val_loss))
        history.append(metrics)
        last = epoch + 1 == spec.epochs
        if rank == 0 and not config.quiet:
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
