"""The whole job spec: every section, and the checks that span sections."""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Literal

from pydantic import Field, model_validator

from runtime.spec.base import FieldError, Section
from runtime.spec.card import Card
from runtime.spec.cluster import ClusterShape, RuntimeEnv
from runtime.spec.data import Data, SyntheticSource
from runtime.spec.evaluate import Evaluate, Register, task_metrics
from runtime.spec.monitor import Monitor
from runtime.spec.serve import Serve
from runtime.spec.space import field_problem, space_value_problem
from runtime.spec.training import TUNE_METRICS, Asha, ModelSpec, SklearnModel, Train, Tune

# `register` is the spec's section name; pydantic warns that it shadows ABCMeta.register, which
# nothing here uses on a spec instance. Silenced for this class definition only.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class JobSpec(Section):
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
        card: Card | None = None
        monitor: Monitor = Monitor()

        @model_validator(mode="after")
        def _consistent(self) -> JobSpec:
            allowed = task_metrics(self.task)
            for metric in self.evaluate.metrics or ():
                if metric not in allowed:
                    raise FieldError(("evaluate", "metrics"),
                                     f"'{metric}' is not a {self.task} metric (choose from "
                                     f"{', '.join(allowed)})")
            gate = self.evaluate.gate
            if gate is not None and gate.metric not in allowed:
                raise FieldError(("evaluate", "gate", "metric"),
                                  f"'{gate.metric}' is not a {self.task} metric (choose from "
                                  f"{', '.join(allowed)})")
            if gate is not None and gate.max_slice_gap is not None and not self.evaluate.slices:
                raise FieldError(("evaluate", "gate", "max_slice_gap"),
                                 "needs evaluate.slices: the columns to slice the test split by")
            if self.data.target in self.evaluate.slices and self.task == "regression":
                raise FieldError(("evaluate", "slices"),
                                 f"'{self.data.target}' is the regression target: slice by "
                                 "another column")
            if self.task == "regression" and self.data.split.stratify:
                raise FieldError(("data", "split", "stratify"),
                                  "stratified splits need a classification task")
            if isinstance(self.data.source, SyntheticSource):
                wants = 0 if self.task == "regression" else 2
                if (self.data.source.classes == 0) != (wants == 0):
                    raise FieldError(("data", "source", "classes"),
                                     f"task is {self.task}: use classes "
                                     f"{'0' if wants == 0 else '>= 2'}")
            if (self.cluster is not None and self.train.use_gpu
                    and not any(g.gpus for g in self.cluster.workers)):
                raise FieldError(("cluster", "workers"),
                                  "train.use_gpu is true but no worker group has gpus")
            if self.tune is not None:
                self._check_tune(self.tune)
            if self.serve.capture is not None and isinstance(self.data.features, list):
                self._check_capture(self.data.features)
            self._check_monitor(allowed)
            return self

        def _check_capture(self, features: list[str]) -> None:
            """Names known before training (a feature list); a model's own features are
            checked again at serve time (serve_apps/capture_hook.check_capture)."""
            from runtime.monitoring.layout import CAPTURE_META

            clash = [f for f in features if f in CAPTURE_META]
            if clash:
                raise FieldError(("data", "features"), f"{clash} clash with the columns every "
                                 "captured row has (serve.capture is on): rename them")
            capture = self.serve.capture
            for field in ("exclude", "hash"):
                for i, name in enumerate(getattr(capture, field)):
                    if name not in features:
                        raise FieldError(("serve", "capture", field, i),
                                         f"'{name}' is not a feature of this model (data."
                                         "features)")

        def _check_monitor(self, allowed: tuple[str, ...]) -> None:
            quality = self.monitor.triggers.quality
            if quality is not None and quality.metric not in allowed:
                raise FieldError(("monitor", "triggers", "quality", "metric"),
                                 f"'{quality.metric}' is not a {self.task} metric (choose from "
                                 f"{', '.join(allowed)})")
            weight = self.monitor.rollout.canary_weight
            canary = self.serve.canary
            if weight and canary is None:
                raise FieldError(("monitor", "rollout", "canary_weight"),
                                 f"{weight} needs the serving app to split traffic: add "
                                 f"serve.canary: {{weight: {weight}}} (or set canary_weight 0 "
                                 "to promote on the gate)")
            if weight and canary is not None and weight != canary.weight:
                raise FieldError(("monitor", "rollout", "canary_weight"),
                                 f"{weight} differs from serve.canary.weight ({canary.weight}): "
                                 "the app sends the canary serve.canary.weight; leave "
                                 "canary_weight out or make them equal")
            if canary is not None and canary.alias == self.register.alias:
                raise FieldError(("serve", "canary", "alias"),
                                 f"'{canary.alias}' is the serving alias (register.alias)")

        @property
        def canary_weight(self) -> float:
            """The share of traffic a retrained challenger gets (0: promote on the gate)."""
            weight = self.monitor.rollout.canary_weight
            if weight is not None:
                return weight
            return self.serve.canary.weight if self.serve.canary is not None else 0.0

        def _check_tune(self, tune: Tune) -> None:
            if isinstance(self.model, SklearnModel):
                raise FieldError(("tune",), "tuning needs a torch model (torch_mlp or a python "
                                             "builder returning a torch.nn.Module)")
            metrics = TUNE_METRICS[self.task]
            if tune.metric not in metrics:
                raise FieldError(("tune", "metric"), f"'{tune.metric}' is not reported by "
                                                     f"training; choose from {', '.join(metrics)}")
            if tune.metric.startswith("val_") and self.data.split.validation == 0:
                raise FieldError(("tune", "metric"), f"'{tune.metric}' needs a validation split "
                                                     "(data.split.validation > 0)")
            for path, domain in tune.space.items():
                parts = path.split(".")
                problem = ("the search cannot tune its own settings" if parts[0] == "tune"
                           else field_problem(self, parts)
                           or space_value_problem(self, path, domain))
                if problem:
                    raise FieldError(("tune", "space", path), problem)
            if isinstance(tune.scheduler, Asha) and tune.scheduler.grace_period > max_epochs(self):
                raise FieldError(("tune", "scheduler", "grace_period"),
                                  f"{tune.scheduler.grace_period} is more than the most epochs a "
                                  f"trial runs ({max_epochs(self)})")

        @property
        def metrics(self) -> tuple[str, ...]:
            return tuple(self.evaluate.metrics or task_metrics(self.task))

        def spec_hash(self) -> str:
            """What is trained, not where: `runtime` and `cluster` do not change the hash, nor
            does the `card` (words about the model) or `monitor` (how traffic is judged)."""
            data = self.model_dump(mode="json", exclude={"runtime", "cluster", "card",
                                                         "monitor"})
            _drop_governance_defaults(data)
            canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
            return hashlib.sha256(canon.encode()).hexdigest()[:16]


def _drop_governance_defaults(data: dict) -> None:
    """Fields added with governance hash only when set, so a spec that does not use them keeps
    the hash it had before (a --resume of an older search still matches its run)."""
    evaluate, register = data["evaluate"], data["register"]
    if not evaluate["slices"]:
        del evaluate["slices"]
    if evaluate["min_slice_rows"] == 30:
        del evaluate["min_slice_rows"]
    if evaluate["gate"] is not None and evaluate["gate"]["max_slice_gap"] is None:
        del evaluate["gate"]["max_slice_gap"]
    if register["approval"] == "auto":
        del register["approval"]


def max_epochs(spec: JobSpec) -> int:
    """The most epochs a trial can run (ASHA's max_t): train.epochs, or the top of its space."""
    domain = spec.tune.space.get("train.epochs") if spec.tune else None
    if not domain:
        return spec.train.epochs
    (kind, bounds), = domain.items()
    return int(bounds[1]) - 1 if kind == "randint" else int(max(bounds))
