"""The job spec: typed, validated, and the only configuration every stage sees.

    mlrt validate jobs/digits.yaml --set train.epochs=3

`load_spec(path, overrides)` reads YAML, applies `--set a.b=value` overrides, and validates with
pydantic. Every problem is reported with the dotted path of the field
(`train.workers: must be >= 1, got 0`) before Ray starts.

One module per group of sections (data, training, evaluate, serve, cluster), `job` for the
whole spec and its cross-section checks; `load`, `paths`, `space` and `messages` do the loading,
`--set` paths, tune-space probing and error wording. Import from here: the names below are the
spec's public API.
"""

from runtime.spec.base import SpecError
from runtime.spec.card import Card
from runtime.spec.cluster import ClusterShape, HeadGroup, RuntimeEnv, WorkerGroup
from runtime.spec.data import (
    SKLEARN_DATASETS,
    Checks,
    Clip,
    ColumnCheck,
    CsvSource,
    Data,
    HashBucket,
    Impute,
    Log1p,
    MinMaxScale,
    OneHot,
    Ordinal,
    ParquetSource,
    PreprocessOp,
    SklearnSource,
    Source,
    Split,
    StandardScale,
    SyntheticSource,
)
from runtime.spec.evaluate import (
    CANDIDATE_ALIAS,
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    Evaluate,
    Gate,
    Register,
    task_metrics,
)
from runtime.spec.job import JobSpec, max_epochs
from runtime.spec.load import apply_overrides, json_schema, load_spec, parse_spec
from runtime.spec.monitor import Monitor
from runtime.spec.paths import set_paths
from runtime.spec.serve import Auth, Batch, Canary, Capture, Replicas, Serve
from runtime.spec.training import (
    TUNE_METRICS,
    Asha,
    Fifo,
    ModelSpec,
    PythonModel,
    Search,
    SklearnModel,
    TorchMLP,
    Train,
    Tune,
)

__all__ = [
    "CANDIDATE_ALIAS", "CLASSIFICATION_METRICS", "REGRESSION_METRICS", "SKLEARN_DATASETS",
    "TUNE_METRICS", "Asha", "Card",
    "Auth", "Batch", "Canary", "Capture", "Checks", "Clip", "ClusterShape", "ColumnCheck",
    "CsvSource",
    "Data", "Evaluate", "Fifo", "Gate", "HashBucket", "HeadGroup", "Impute", "JobSpec", "Log1p",
    "MinMaxScale", "ModelSpec", "Monitor", "OneHot", "Ordinal", "ParquetSource", "PreprocessOp",
    "PythonModel", "Register", "Replicas", "RuntimeEnv", "Search", "Serve", "SklearnModel",
    "SklearnSource", "Source", "Split", "SpecError", "StandardScale", "SyntheticSource",
    "TorchMLP", "Train", "Tune", "WorkerGroup", "apply_overrides", "json_schema", "load_spec",
    "max_epochs", "parse_spec", "set_paths", "task_metrics",
]
