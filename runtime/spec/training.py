"""The `model:`, `train:` and `tune:` sections."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from runtime.spec.base import FieldError, Section


class TorchMLP(Section):
    kind: Literal["torch_mlp"]
    hidden: list[Annotated[int, Field(ge=1)]] = [128, 64]
    dropout: float = Field(0.0, ge=0, lt=1)


class SklearnModel(Section):
    kind: Literal["sklearn"]
    estimator: str = Field(pattern=r"^sklearn(\.\w+)+\.[A-Z]\w*$",
                           description="import path of a scikit-learn estimator class")
    params: dict[str, Any] = {}


class PythonModel(Section):
    kind: Literal["python"]
    builder: str = Field(pattern=r"^[\w.]+:\w+$", description="module:function in the working dir")
    params: dict[str, Any] = {}


ModelSpec = Annotated[TorchMLP | SklearnModel | PythonModel, Field(discriminator="kind")]


class Train(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(0, ge=-1, description="-1 retries forever")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    seed: int = 0
    single_process_below_mb: float = Field(
        4.0, ge=0, description="model-ready training data (train + validation, float32) "
        "below this many MiB trains in one process, whatever `workers` says: Ray Train's "
        "worker group costs ~10 s to start, more than DDP saves on data this small; "
        "0 always uses the worker group")
    placement: Literal["pack", "spread"] = Field(
        "pack", description="pack: workers on as few nodes as possible (fast collectives); "
                            "spread: one per node where possible (fault isolation)")



class Asha(Section):
    kind: Literal["asha"]
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3, gt=1)


class Fifo(Section):
    kind: Literal["fifo"]


class Search(Section):
    kind: Literal["random", "grid", "optuna"] = "random"


Domain = dict[Literal["uniform", "loguniform", "randint", "choice", "grid"], Any]
# What the training loop reports each epoch (val_* need a validation split).
TUNE_METRICS = {"classification": ("val_accuracy", "val_loss", "train_loss", "train_accuracy"),
                "regression": ("val_loss", "val_rmse", "train_loss")}


class Tune(Section):
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    samples: int = Field(8, ge=1, description="trials to sample (grid search: each point once)")
    concurrent: int = Field(2, ge=1)
    time_budget_s: float | None = Field(None, gt=0)
    scheduler: Annotated[Asha | Fifo, Field(discriminator="kind")] = Fifo(kind="fifo")
    search: Search = Search()
    space: dict[str, Domain] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _one_domain_each(cls, space: dict[str, Domain]) -> dict[str, Domain]:
        for path, domain in space.items():
            if len(domain) != 1:
                raise ValueError(f"{path}: give exactly one of uniform, loguniform, randint, "
                                 f"choice, grid; got {sorted(domain)}")
            (kind, bounds), = domain.items()
            if kind in ("uniform", "loguniform", "randint"):
                ok = (isinstance(bounds, list) and len(bounds) == 2
                      and all(isinstance(b, int | float) for b in bounds) and bounds[0] < bounds[1])
                if not ok:
                    raise ValueError(f"{path}: {kind} needs [low, high] with low < high, "
                                     f"got {bounds!r}")
                if kind == "loguniform" and bounds[0] <= 0:
                    raise ValueError(f"{path}: loguniform needs low > 0, got {bounds[0]}")
                if kind == "randint" and not all(isinstance(b, int) for b in bounds):
                    raise ValueError(f"{path}: randint needs integer bounds, got {bounds!r}")
            elif not (isinstance(bounds, list) and bounds):
                raise ValueError(f"{path}: {kind} needs a non-empty list, got {bounds!r}")
        return space

    @model_validator(mode="after")
    def _search_fits_space(self) -> Tune:
        kinds = {path: next(iter(domain)) for path, domain in self.space.items()}
        if self.search.kind == "grid":
            sampled = [p for p, k in kinds.items() if k not in ("grid", "choice")]
            if sampled:
                raise FieldError(("search", "kind"),
                                  f"grid search needs grid or choice domains; "
                                  f"{', '.join(sampled)} are sampled")
        if self.search.kind == "optuna":
            gridded = [p for p, k in kinds.items() if k == "grid"]
            if gridded:
                raise FieldError(("search", "kind"),
                                  f"optuna cannot search grid domains ({', '.join(gridded)}); "
                                  "use choice")
        return self
