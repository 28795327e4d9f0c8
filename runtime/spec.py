"""The job spec: typed, validated, and the only configuration every stage sees.

    mlrt validate jobs/digits.yaml --set train.epochs=3

`load_spec(path, overrides)` reads YAML, applies `--set a.b=value` overrides, and validates with
pydantic. Every problem is reported with the dotted path of the field
(`train.workers: must be >= 1, got 0`) before Ray starts.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
import typing
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from runtime.errors import InputError

CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "precision", "recall", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
SKLEARN_DATASETS = ("digits", "breast_cancer", "wine", "iris", "diabetes")


class SpecError(InputError):
    """A spec that cannot run. `errors` holds one `path: message` line per problem."""

    def __init__(self, errors: Sequence[str], source: str = "spec"):
        self.errors = list(errors)
        self.source = source
        super().__init__(f"{source}: invalid job spec\n" + "\n".join(f"  {e}" for e in errors))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- data -------------------------------------------------------------------------------------


class SklearnSource(_Section):
    kind: Literal["sklearn"]
    name: Literal["digits", "breast_cancer", "wine", "iris", "diabetes"]


class ParquetSource(_Section):
    kind: Literal["parquet"]
    path: str = Field(min_length=1, description="file, directory, glob or pyarrow filesystem URI")


class CsvSource(_Section):
    kind: Literal["csv"]
    path: str = Field(min_length=1, description="file, directory, glob or pyarrow filesystem URI")


class SyntheticSource(_Section):
    kind: Literal["synthetic"]
    rows: int = Field(1000, ge=10)
    features: int = Field(8, ge=1)
    classes: int = Field(2, ge=0, description="0 makes a regression target")
    seed: int = 0

    @field_validator("classes")
    @classmethod
    def _not_one_class(cls, v: int) -> int:
        if v == 1:
            raise ValueError("must be 0 (regression) or >= 2 classes")
        return v


Source = Annotated[
    SklearnSource | ParquetSource | CsvSource | SyntheticSource, Field(discriminator="kind")
]


class Split(_Section):
    test: float = Field(0.2, gt=0, lt=1)
    validation: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    stratify: bool | None = Field(None, description="default: true for classification")

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> Split:
        if self.test + self.validation >= 0.9:
            raise ValueError(
                f"test + validation must leave >= 10% for training, got "
                f"{self.test} + {self.validation}"
            )
        return self


ColumnSelector = Union[Literal["numeric", "categorical", "all"], list[str]]


class StandardScale(_Section):
    op: Literal["standard_scale"]
    columns: ColumnSelector = "numeric"


class MinMaxScale(_Section):
    op: Literal["min_max_scale"]
    columns: ColumnSelector = "numeric"


class OneHot(_Section):
    op: Literal["one_hot"]
    columns: ColumnSelector = "categorical"
    max_categories: int | None = Field(None, ge=1)


class Impute(_Section):
    op: Literal["impute"]
    columns: ColumnSelector = "numeric"
    strategy: Literal["mean", "most_frequent", "constant"] = "mean"
    fill_value: float | str | None = None

    @model_validator(mode="after")
    def _constant_needs_value(self) -> Impute:
        if self.strategy == "constant" and self.fill_value is None:
            raise ValueError("strategy 'constant' needs fill_value")
        return self


class Ordinal(_Section):
    """Each category -> its index among the training split's sorted categories (one model
    input per column); unseen categories and nulls -> -1."""

    op: Literal["ordinal"]
    columns: ColumnSelector = "categorical"


class HashBucket(_Section):
    """Each value -> one of `buckets` indicator columns by a stable hash of its text: nothing
    to fit, and unseen categories still land in a bucket. Nulls -> all zeros."""

    op: Literal["hash_bucket"]
    columns: ColumnSelector = "categorical"
    buckets: int = Field(16, ge=2, le=1_000_000)


class Log1p(_Section):
    """sign(x) * log(1 + |x|): log1p for x >= 0, and defined (odd) below, so no input turns
    into NaN at serving time."""

    op: Literal["log1p"]
    columns: ColumnSelector = "numeric"


class Clip(_Section):
    op: Literal["clip"]
    columns: ColumnSelector = "numeric"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Clip:
        if self.min is None and self.max is None:
            raise ValueError("clip needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"clip min {self.min} is above max {self.max}")
        return self


PreprocessOp = Annotated[
    StandardScale | MinMaxScale | OneHot | Impute | Ordinal | HashBucket | Log1p | Clip,
    Field(discriminator="op"),
]


def _in_order(lo_name: str, lo: float | None, hi_name: str, hi: float | None) -> None:
    """A section's lower bound must not pass its upper bound (either may be unset)."""
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{lo_name} ({lo}) must be <= {hi_name} ({hi})")


class ColumnCheck(_Section):
    dtype: Literal["numeric", "integer", "categorical"] | None = None
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float | bool] | None = Field(None, min_length=1)
    max_null_fraction: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> ColumnCheck:
        _in_order("min", self.min, "max", self.max)
        if self.allowed is not None and (self.min is not None or self.max is not None):
            raise ValueError("use either allowed (categories) or min/max (a range), not both")
        return self


class Checks(_Section):
    min_rows: int = Field(0, ge=0)
    max_null_fraction: float = Field(1.0, ge=0, le=1)
    columns: dict[str, ColumnCheck] = Field(
        {}, description="per-column checks: dtype, min, max, allowed, max_null_fraction")
    on_fail: Literal["stop", "drop_rows"] = Field(
        "stop", description="rows failing a range or allowed-values check: stop the run, or drop "
                            "them and go on (dtype, null and min_rows checks always stop)")


class Data(_Section):
    source: Source
    target: str = Field("target", min_length=1)
    features: Literal["all"] | list[str] = "all"
    split: Split = Split()
    preprocess: list[PreprocessOp] = []
    checks: Checks = Checks()

    @field_validator("features")
    @classmethod
    def _features_unique(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("must name at least one column, or be 'all'")
            dupes = sorted({c for c in v if v.count(c) > 1})
            if dupes:
                raise ValueError(f"columns listed twice: {dupes}")
        return v

    @model_validator(mode="after")
    def _target_not_a_feature(self) -> Data:
        if isinstance(self.features, list) and self.target in self.features:
            raise ValueError(f"the target '{self.target}' cannot also be a feature")
        return self


# --- model and training -----------------------------------------------------------------------


class TorchMLP(_Section):
    kind: Literal["torch_mlp"]
    hidden: list[Annotated[int, Field(ge=1)]] = [128, 64]
    dropout: float = Field(0.0, ge=0, lt=1)


class SklearnModel(_Section):
    kind: Literal["sklearn"]
    estimator: str = Field(pattern=r"^sklearn(\.\w+)+\.[A-Z]\w*$",
                           description="import path of a scikit-learn estimator class")
    params: dict[str, Any] = {}


class PythonModel(_Section):
    kind: Literal["python"]
    builder: str = Field(pattern=r"^[\w.]+:\w+$", description="module:function in the working dir")
    params: dict[str, Any] = {}


ModelSpec = Annotated[TorchMLP | SklearnModel | PythonModel, Field(discriminator="kind")]


class Train(_Section):
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
    placement: Literal["pack", "spread"] = Field(
        "pack", description="pack: workers on as few nodes as possible (fast collectives); "
                            "spread: one per node where possible (fault isolation)")


# --- tune -------------------------------------------------------------------------------------


class Asha(_Section):
    kind: Literal["asha"]
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3, gt=1)


class Fifo(_Section):
    kind: Literal["fifo"]


class Search(_Section):
    kind: Literal["random", "grid", "optuna"] = "random"


Domain = dict[Literal["uniform", "loguniform", "randint", "choice", "grid"], Any]
# What the training loop reports each epoch (val_* need a validation split).
TUNE_METRICS = {"classification": ("val_accuracy", "val_loss", "train_loss", "train_accuracy"),
                "regression": ("val_loss", "val_rmse", "train_loss")}


class Tune(_Section):
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
                raise _FieldError(("search", "kind"),
                                  f"grid search needs grid or choice domains; "
                                  f"{', '.join(sampled)} are sampled")
        if self.search.kind == "optuna":
            gridded = [p for p, k in kinds.items() if k == "grid"]
            if gridded:
                raise _FieldError(("search", "kind"),
                                  f"optuna cannot search grid domains ({', '.join(gridded)}); "
                                  "use choice")
        return self


def _domain_probes(kind: str, bounds: list) -> list:
    """Values that stand for everything a domain can produce: both ends (randint's high is
    exclusive), a non-integral point for continuous domains, every listed value."""
    if kind == "randint":
        return [bounds[0], bounds[1] - 1]
    if kind in ("uniform", "loguniform"):
        return [bounds[0], bounds[1], bounds[0] + 0.371 * (bounds[1] - bounds[0])]
    return list(bounds)


def set_paths(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of plain spec data with each dotted path set to its value (paths that the spec
    already validated: tune.space, a trial's config)."""
    raw = json.loads(json.dumps(raw))
    for path, value in values.items():
        _put(raw, path, value)
    return raw


def _put(raw: dict[str, Any], path: str, value: Any) -> str | None:
    """Set dotted `path` in plain spec data, in place; return the prefix that is not a
    section (and set nothing) when there is one."""
    node = raw
    *parents, last = path.split(".")
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return ".".join(parents[: i + 1])
    node[last] = value
    return None


def _space_value_problem(spec: JobSpec, path: str, domain: Domain) -> str | None:
    """Validate the spec with each probe value of the domain at `path`: a value of the wrong
    type or out of the field's range fails here, before Ray starts, not in a trial."""
    (kind, bounds), = domain.items()
    base = spec.model_dump(mode="json", exclude={"tune"})
    for value in _domain_probes(kind, bounds):
        raw = set_paths(base, {path: value})
        try:
            JobSpec.model_validate(raw)
        except ValidationError as e:
            problem = _format_errors(e, raw)[0]
            hint = ("; this field takes integers: use randint or choice"
                    if kind in ("uniform", "loguniform") and "integer" in problem else "")
            return f"{kind} value {value!r} does not fit: {problem}{hint}"
    return None


# --- evaluate, register, serve ----------------------------------------------------------------


class Gate(_Section):
    metric: str
    min: float | None = Field(None, description="lower bound (upper bound for rmse/mae)")
    beat_champion: bool = False


class Evaluate(_Section):
    metrics: list[str] | None = Field(None, description="default: every metric of the task")
    gate: Gate | None = None


class Register(_Section):
    alias: str = Field("champion", pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$", max_length=255)

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v.lower() == "latest" or re.fullmatch(r"[vV]\d+", v):
            raise ValueError(f"'{v}' is reserved by MLflow; pick another alias")
        return v


class Replicas(_Section):
    min: int = Field(1, ge=0)
    max: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        _in_order("min", self.min, "max", self.max)
        return self


class Batch(_Section):
    max_size: int = Field(32, ge=1)
    wait_ms: float = Field(5, ge=0)


class Auth(_Section):
    api_key_env: str = Field(pattern=r"^[A-Za-z_]\w*$")


class Canary(_Section):
    alias: str = "challenger"
    weight: float = Field(0.1, gt=0, lt=1)


class Serve(_Section):
    route: str = Field("/", pattern=r"^/[\w/-]*$")
    replicas: Replicas = Replicas()
    max_queued_requests: int = Field(100, ge=-1)
    max_payload_bytes: int = Field(1_000_000, ge=1)
    batch: Batch = Batch()
    cpus_per_replica: float = Field(0.5, gt=0)
    auth: Auth | None = None
    canary: Canary | None = None


# --- where the job runs: Ray runtime env and cluster shape -----------------------------------


class RuntimeEnv(_Section):
    """What `mlrt submit` adds to the Ray job's runtime_env (the working dir is always sent)."""

    pip: list[str] = Field([], description="extra pip requirements installed for the job")
    env_vars: dict[str, str] = Field({}, description="environment variables of the job")
    excludes: list[str] = Field([], description="more working-dir paths (gitignore syntax) "
                                                "not to upload")
    shared_storage: bool = Field(
        False, description="`storage` is a local path every node mounts (NFS): allowed on a "
                           "multi-node cluster")


_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_K8S_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"


class HeadGroup(_Section):
    cpus: float = Field(2, gt=0)
    memory: str = Field("8Gi", pattern=_K8S_QUANTITY)


class WorkerGroup(_Section):
    name: str = Field(pattern=_K8S_NAME, max_length=40)
    cpus: float = Field(4, gt=0)
    memory: str = Field("16Gi", pattern=_K8S_QUANTITY)
    gpus: int = Field(0, ge=0)
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> WorkerGroup:
        _in_order("min_replicas", self.min_replicas, "max_replicas", self.max_replicas)
        return self


class ClusterShape(_Section):
    """The Ray cluster a rendered KubeRay RayJob / RayService creates."""

    image: str = Field("mlrt:0.1.0", min_length=1,
                       description="image with Ray and mlrt installed (cluster/Dockerfile)")
    head: HeadGroup = HeadGroup()
    workers: list[WorkerGroup] = Field(
        [WorkerGroup(name="cpu", cpus=4, min_replicas=1, max_replicas=4)], min_length=1)

    @field_validator("workers")
    @classmethod
    def _unique_names(cls, groups: list[WorkerGroup]) -> list[WorkerGroup]:
        names = [g.name for g in groups]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"worker group names must be unique, repeated: {dupes}")
        return groups


# `register` is the spec's section name; pydantic warns that it shadows ABCMeta.register, which
# nothing here uses on a spec instance.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class JobSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100,
                      description="experiment and registered-model name")
    task: Literal["classification", "regression"]
    storage: str = Field(".mlrt", min_length=1, description="local path or URI")
    data: Data
    model: ModelSpec
    train: Train = Train()
    tune: Tune | None = None
    evaluate: Evaluate = Evaluate()
    register: Register = Register()
    serve: Serve = Serve()
    runtime: RuntimeEnv = RuntimeEnv()
    cluster: ClusterShape | None = None

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        allowed = task_metrics(self.task)
        for metric in self.evaluate.metrics or ():
            if metric not in allowed:
                raise _FieldError(("evaluate", "metrics"),
                                  f"'{metric}' is not a {self.task} metric (choose from "
                                  f"{', '.join(allowed)})")
        gate = self.evaluate.gate
        if gate is not None and gate.metric not in allowed:
            raise _FieldError(("evaluate", "gate", "metric"),
                              f"'{gate.metric}' is not a {self.task} metric (choose from "
                              f"{', '.join(allowed)})")
        if self.task == "regression" and self.data.split.stratify:
            raise _FieldError(("data", "split", "stratify"),
                              "stratified splits need a classification task")
        if isinstance(self.data.source, SyntheticSource):
            wants = 0 if self.task == "regression" else 2
            if (self.data.source.classes == 0) != (wants == 0):
                raise _FieldError(("data", "source", "classes"),
                                  f"task is {self.task}: use classes "
                                  f"{'0' if wants == 0 else '>= 2'}")
        if (self.cluster is not None and self.train.use_gpu
                and not any(g.gpus for g in self.cluster.workers)):
            raise _FieldError(("cluster", "workers"),
                              "train.use_gpu is true but no worker group has gpus")
        if self.tune is not None:
            self._check_tune(self.tune)
        return self

    def _check_tune(self, tune: Tune) -> None:
        if isinstance(self.model, SklearnModel):
            raise _FieldError(("tune",), "tuning needs a torch model (torch_mlp or a python "
                                         "builder returning a torch.nn.Module)")
        metrics = TUNE_METRICS[self.task]
        if tune.metric not in metrics:
            raise _FieldError(("tune", "metric"), f"'{tune.metric}' is not reported by "
                                                  f"training; choose from {', '.join(metrics)}")
        if tune.metric.startswith("val_") and self.data.split.validation == 0:
            raise _FieldError(("tune", "metric"), f"'{tune.metric}' needs a validation split "
                                                  "(data.split.validation > 0)")
        for path, domain in tune.space.items():
            parts = path.split(".")
            problem = ("the search cannot tune its own settings" if parts[0] == "tune"
                       else _field_problem(self, parts)
                       or _space_value_problem(self, path, domain))
            if problem:
                raise _FieldError(("tune", "space", path), problem)
        if isinstance(tune.scheduler, Asha) and tune.scheduler.grace_period > max_epochs(self):
            raise _FieldError(("tune", "scheduler", "grace_period"),
                              f"{tune.scheduler.grace_period} is more than the most epochs a "
                              f"trial runs ({max_epochs(self)})")

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.evaluate.metrics or task_metrics(self.task))

    def spec_hash(self) -> str:
        """What is trained, not where: `runtime` and `cluster` do not change the hash."""
        canon = json.dumps(self.model_dump(mode="json", exclude={"runtime", "cluster"}),
                           sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]


def max_epochs(spec: JobSpec) -> int:
    """The most epochs a trial can run (ASHA's max_t): train.epochs, or the top of its space."""
    domain = spec.tune.space.get("train.epochs") if spec.tune else None
    if not domain:
        return spec.train.epochs
    (kind, bounds), = domain.items()
    return int(bounds[1]) - 1 if kind == "randint" else int(max(bounds))


def task_metrics(task: str) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


class _FieldError(ValueError):
    """Raised inside a model validator to report an error at a nested field."""

    def __init__(self, loc: tuple[str, ...], message: str):
        self.loc = loc
        super().__init__(message)


def _field_problem(spec: JobSpec, parts: list[str]) -> str | None:
    node: Any = spec
    for i, part in enumerate(parts):
        fields = type(node).model_fields if isinstance(node, BaseModel) else None
        if fields is None or part not in fields:
            where = ".".join(parts[:i]) or "the spec"
            options = ", ".join(fields) if fields else "nothing"
            return f"names no field: {where} has no '{part}' (it has {options})"
        node = getattr(node, part)
        if node is None:
            return f"names a section that is not in the spec: {'.'.join(parts[: i + 1])}"
    if isinstance(node, BaseModel):
        return "names a section; name one of its fields instead"
    return None


# --- loading ----------------------------------------------------------------------------------


def load_spec(path: str | Path, overrides: Iterable[str] = ()) -> JobSpec:
    """Read, override and validate a spec file; raise SpecError naming every bad field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError([f"cannot read the spec file: {e.strerror}"], str(path)) from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError([f"YAML syntax error{where}: {problem}"], str(path)) from e
    if not isinstance(raw, dict):
        raise SpecError([f"the spec must be a YAML mapping, got {type(raw).__name__}"], str(path))
    return parse_spec(apply_overrides(raw, overrides, str(path)), str(path))


def parse_spec(raw: dict[str, Any], source: str = "spec") -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(_format_errors(e, raw), source) from None


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str], source: str) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML (`[64, 32]`, `0.01`, `true`)."""
    raw = json.loads(json.dumps(raw))  # deep copy; the spec is plain YAML data
    errors = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            errors.append(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
            continue
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        not_a_section = _put(raw, key.strip(), parsed)
        if not_a_section:
            errors.append(f"--set {key}: {not_a_section} is not a section")
    if errors:
        raise SpecError(errors, source)
    return raw


def json_schema() -> dict[str, Any]:
    schema = JobSpec.model_json_schema()
    schema["title"] = "mlrt job spec"
    return schema


# --- error formatting -------------------------------------------------------------------------

_MESSAGES = [
    (re.compile(r"^Input should be greater than or equal to (.+)$"), r"must be >= \1"),
    (re.compile(r"^Input should be greater than (.+)$"), r"must be > \1"),
    (re.compile(r"^Input should be less than or equal to (.+)$"), r"must be <= \1"),
    (re.compile(r"^Input should be less than (.+)$"), r"must be < \1"),
    (re.compile(r"^Input should be (.+)$"), r"must be \1"),
    (re.compile(r"^Value error, (.+)$"), r"\1"),
    (re.compile(r"^String should match pattern (.+)$"), r"must match \1"),
]


_NO_INPUT_ECHO = {"value_error", "assertion_error", "extra_forbidden", "union_tag_invalid",
                  "union_tag_not_found"}


def _format_errors(exc: ValidationError, raw: dict[str, Any]) -> list[str]:
    lines = []
    for err in exc.errors():
        ctx_error = (err.get("ctx") or {}).get("error")
        loc = list(err["loc"])
        if isinstance(ctx_error, _FieldError):
            loc = loc + list(ctx_error.loc)
            message = str(ctx_error)
        else:
            message = _message(err, raw)
        path = _dotted(loc, raw)
        if err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] not in _NO_INPUT_ECHO and not isinstance(ctx_error, _FieldError):
            message = f"{message}, got {_short(err['input'])}"
        lines.append(f"{path or '(top level)'}: {message}")
    return lines


def _message(err: dict[str, Any], raw: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        allowed = _allowed_fields(list(err["loc"][:-1]), raw)
        hint = difflib.get_close_matches(name, allowed, n=1)
        message = f"unknown field '{name}'"
        if hint:
            message += f"; did you mean '{hint[0]}'?"
        elif allowed:
            message += f" (allowed: {', '.join(allowed)})"
        return message
    if err["type"] == "union_tag_invalid":
        return (f"unknown {err['ctx']['discriminator'].strip(chr(39))} "
                f"{err['ctx']['tag']!r}; choose from {err['ctx']['expected_tags']}")
    if err["type"] == "union_tag_not_found":
        return f"needs a {err['ctx']['discriminator'].strip(chr(39))} field"
    message = err["msg"]
    for pattern, repl in _MESSAGES:
        if pattern.match(message):
            return pattern.sub(repl, message)
    return message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(loc: list[Any], raw: Any) -> str:
    """`('model', 'torch_mlp', 'hidden', 0)` -> `model.hidden[0]`: drop discriminator tags."""
    out: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            out.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            continue
        if isinstance(node, dict) and item not in node and item in (
            node.get("kind"), node.get("op")
        ):
            continue  # pydantic's tag segment for a discriminated union
        if item in ("function-after", "function-before") or str(item).startswith("function-"):
            continue
        out.append(("." if out else "") + str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(out)


def _allowed_fields(loc: list[Any], raw: Any) -> list[str]:
    """Field names of the section at `loc` (resolving discriminated unions by the raw data)."""
    model: Any = JobSpec
    node = raw
    for item in loc:
        if isinstance(item, int):
            node = node[item] if isinstance(node, list) and item < len(node) else None
            model = _unwrap(model, node, list_item=True)
            continue
        if isinstance(node, dict) and item not in node and item in (
            node.get("kind"), node.get("op")
        ):
            continue
        fields = getattr(model, "model_fields", {})
        if item not in fields:
            return []
        node = node.get(item) if isinstance(node, dict) else None
        model = _unwrap(fields[item].annotation, node)
    return list(getattr(model, "model_fields", {}))


def _unwrap(annotation: Any, node: Any, list_item: bool = False) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            chosen = members[0] if len(members) == 1 else None
            for m in members:
                m = typing.get_args(m)[0] if typing.get_origin(m) is Annotated else m
                tag = next((f for f in ("kind", "op") if f in getattr(m, "model_fields", {})), None)
                if tag and isinstance(node, dict) and node.get(tag) in typing.get_args(
                    m.model_fields[tag].annotation
                ):
                    chosen = m
            if chosen is None:
                return None
            annotation = chosen
        elif list_item and origin is list:
            annotation = typing.get_args(annotation)[0]
            list_item = False
        else:
            return annotation
