"""The evaluate and register stages: what a run decides about the model it trained.

evaluate: the saved model dir predicts the test split batch by batch; metrics overall and per
slice (`evaluate.slices`, columns that need not be model inputs); the gate. register: a new
version (always, tagged with the verdict, the slices and, under manual approval, `pending`);
its "registered" audit event with the gate's numbers; a passing gate then moves the serving
alias, or `@candidate` under `register.approval: manual`; the model card is logged last.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from runtime.data.scan import to_frame
from runtime.data.table import Table
from runtime.errors import DataCheckError
from runtime.governance import approvals, audit, card
from runtime.inference.predictor import Predictor
from runtime.pipeline import record
from runtime.registry import tracking, versions
from runtime.registry.model_dir import ModelMeta
from runtime.spec import JobSpec
from runtime.training.evaluate import Slice, Verdict, check_gate, compute_metrics, slice_metrics

EVAL_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    verdict: Verdict
    slices: list[Slice]
    champion: versions.VersionInfo | None  # the serving alias's version the gate compared with
    prediction_profile: dict | None = None  # the test split's predictions (prediction drift)


@dataclass(frozen=True)
class Retrain:
    """What a watcher's retrain adds to a run: `tags` on the new version (mlrt.trigger, its
    evidence), `alias` a passing gate moves instead of register.alias (None: the usual one;
    manual approval still moves @candidate), `extra_rows` appended to the source."""

    tags: dict[str, str]
    alias: str | None = None
    extra_rows: object = None  # a ray.data.Dataset or pandas DataFrame of source columns


@dataclass(frozen=True)
class Registration:
    version: str
    alias: str  # the alias a passing gate moved (the serving one, or candidate)
    moved_from: str | None
    warnings: list[str]  # cards of other versions that could not be refreshed


def evaluate(spec: JobSpec, table: Table, predictor: Predictor) -> Evaluation:
    y_true, predictions, proba, columns = predict_test_split(table, predictor,
                                                             spec.evaluate.slices)
    metrics = compute_metrics(spec.metrics, y_true, predictions, proba, table.classes)
    slices = slice_metrics(spec.metrics, columns, y_true, predictions, proba, table.classes,
                           spec.evaluate.min_slice_rows)
    tracking.log_metrics({f"test_{k}": v for k, v in metrics.items()})
    if slices:
        tracking.log_metrics({_slice_metric(s, k): v for s in slices
                              for k, v in s.metrics.items()})
        tracking.log_dict([s.to_json() for s in slices], "slices.json")
    champion = versions.version_by_alias(spec.name, spec.register.alias)
    verdict = check_gate(spec.evaluate.gate, metrics, champion.metrics if champion else None,
                         champion.version if champion else None, slices)
    tracking.set_tags({"mlrt.gate": "passed" if verdict.passed else "failed",
                       "mlrt.gate_reason": verdict.reason})
    return Evaluation(metrics, verdict, slices, champion,
                      prediction_profile(predictions, spec.task))


def prediction_profile(predictions: np.ndarray, task: str) -> dict:
    """The reference of prediction drift, stored with the version: the profile of the test
    split's predictions (class frequencies, or bins for a regressor), in column `prediction`
    as `mlrt monitor` reads captured rows. The same as runtime.monitoring.drift's, which this
    package must not import (monitoring runs the pipeline, not the reverse)."""
    from runtime.data.profile import profile_frame

    kind = "categorical" if task == "classification" else "numeric"
    return profile_frame(pd.DataFrame({"prediction": np.asarray(predictions)}),
                         {"prediction": kind})


def _slice_metric(s: Slice, metric: str) -> str:
    """`test_slice.sex.F.accuracy`: MLflow keeps letters, digits, _ - . / and spaces."""
    value = "".join(c if c.isalnum() or c in "_-. " else "_" for c in s.value)
    return f"test_slice.{s.column}.{value}.{metric}"


def register(spec: JobSpec, table: Table, model_dir: Path, predictor: Predictor,
             meta: ModelMeta, result: Evaluation, run_id: str,
             actor: str | None, retrain: Retrain | None = None) -> Registration:
    """A new model version (always); the gate's alias moves only on a pass. The registered
    event is written before the alias moves, so the trail never holds a move before the
    version it moved to."""
    passed = result.verdict.passed
    version = tracking.log_model_version(
        spec.name, model_dir, _signature(table, predictor), record.requirements(meta),
        tags={
            "mlrt.metrics": json.dumps(result.metrics),
            "mlrt.gate": "passed" if passed else "failed",
            "mlrt.gate_reason": result.verdict.reason,
            "mlrt.spec_hash": spec.spec_hash(),
            "mlrt.data_fingerprint": table.fingerprint,
            "mlrt.git_commit": record.git_commit() or "",
            "mlrt.task": spec.task,
            **({tracking.SLICES_TAG: tracking.slices_tag([s.to_json() for s in result.slices])}
               if result.slices else {}),
            **approvals.registration_tags(spec.register.approval, passed, spec.register.alias),
            **(retrain.tags if retrain else {}),
        },
    )
    audit.record_event(spec.storage, spec.name, audit.REGISTERED, actor, None,
                       version=version, run_id=run_id, metrics=result.metrics,
                       gate=_gate_numbers(spec, result), approval=spec.register.approval)
    alias = approvals.gate_alias(spec.register.approval, spec.register.alias)
    if retrain is not None and retrain.alias and spec.register.approval != "manual":
        alias = retrain.alias  # a canary: the serving alias moves only when it is promoted
    moved_from = None
    if passed:
        note = audit.Note(spec.storage, actor, None, audit.ALIAS_MOVED,
                          {"run_id": run_id, "cause": "gate passed"})
        moved_from = versions.move_alias(spec.name, alias, version, note)
    card.log_card(spec.storage, spec.name, version)
    warnings = card.refresh_cards(spec.storage, spec.name, moved_from)  # lost its alias
    return Registration(version, alias, moved_from, warnings)


def _gate_numbers(spec: JobSpec, result: Evaluation) -> dict:
    """The verdict with the numbers it was decided on (for the registered event)."""
    gate = spec.evaluate.gate
    numbers: dict = {"passed": result.verdict.passed, "reason": result.verdict.reason}
    if gate is None:
        return numbers
    numbers.update(gate.model_dump(mode="json", exclude_none=True))
    numbers["value"] = result.metrics.get(gate.metric)
    if result.champion is not None and gate.beat_champion:
        numbers["champion"] = {"version": result.champion.version,
                               "value": result.champion.metrics.get(gate.metric)}
    from runtime.training.evaluate import worst_slice

    worst = worst_slice(result.slices, gate.metric, numbers["value"]) if result.slices and \
        numbers["value"] is not None else None
    if worst is not None:
        numbers["worst_slice"] = {"slice": worst[0].label, "rows": worst[0].rows,
                                  "value": worst[0].metrics[gate.metric], "gap": worst[1]}
    return numbers


def predict_test_split(table: Table, predictor: Predictor, slices: list[str] | tuple = ()):
    """Predict the test split batch by batch: the driver holds labels, predictions and the
    slice columns' values, not the rows."""
    if table.frames is not None:
        batches = [table.frames["test"]]
    else:
        batches = (to_frame(b) for b in table.dataset("test").iter_batches(
            batch_size=EVAL_BATCH_ROWS, batch_format="pyarrow"))
    y_true, predicted, probabilities = [], [], []
    columns: dict[str, list] = {c: [] for c in slices}
    for batch in batches:
        labels, proba = predictor.predict(batch[table.features])
        y_true.append(batch[table.target].to_numpy())
        predicted.append(labels)
        for c in slices:
            columns[c].append(batch[c].to_numpy(dtype=object))
        if proba is not None:
            probabilities.append(proba)
    if not y_true:
        raise DataCheckError("data.split.test: the test split is empty")
    return (np.concatenate(y_true), np.concatenate(predicted),
            np.concatenate(probabilities) if probabilities else None,
            {c: np.concatenate(v) for c, v in columns.items()})


def _test_rows(table: Table, n: int) -> pd.DataFrame:
    if table.frames is not None:
        return table.frames["test"].head(n)
    return pd.DataFrame(table.dataset("test").take(n))


def _signature(table: Table, predictor: Predictor):
    from mlflow.models import infer_signature

    sample = _test_rows(table, 5)[table.features]
    with warnings.catch_warnings():  # the integer-columns hint: inputs are validated by mlrt
        warnings.simplefilter("ignore", UserWarning)
        return infer_signature(sample, predictor.predict_frame(sample))
