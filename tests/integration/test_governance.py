"""Integration: the driver's governance on the session's Ray and a real MLflow sqlite store:
the registered event with the gate's numbers, slices of a column that is not a model input
(equal to a pandas groupby of the registered model's predictions), the slice gate, manual
approval, and the model card holding the registered numbers."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from factories import LOGISTIC, spec_data
from sklearn.datasets import load_breast_cancer

from runtime.data.table import load_table
from runtime.errors import GateFailed
from runtime.governance import approvals, audit, card
from runtime.pipeline.driver import run_job
from runtime.registry import tracking, versions
from runtime.spec import parse_spec

pytestmark = pytest.mark.integration
NAME = "it-gov"
FEATURES = list(load_breast_cancer().feature_names)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """Breast cancer with a `site` column that is not a feature: labels at site B are noisy,
    so the model is worse there."""
    frame = load_breast_cancer(as_frame=True).frame
    rng = np.random.default_rng(0)
    site = rng.choice(["A", "B"], size=len(frame))
    flip = (site == "B") & (rng.random(len(frame)) < 0.3)
    frame["target"] = np.where(flip, 1 - frame["target"], frame["target"])
    frame["site"] = site
    path = tmp_path_factory.mktemp("gov-data") / "bc.parquet"
    frame.to_parquet(path)
    return str(path)


def _spec(storage, source: str, **sections):
    data = {"source": {"kind": "parquet", "path": source}, "target": "target",
            "features": FEATURES, "split": {"test": 0.3, "validation": 0.0, "seed": 3},
            "preprocess": [{"op": "standard_scale"}]}
    evaluate = {"slices": ["site"], "min_slice_rows": 20,
                "gate": {"metric": "accuracy", "min": 0.5}}
    return parse_spec(spec_data(storage, NAME, data=data, evaluate=evaluate,
                                model={**LOGISTIC, "params": {"max_iter": 500}},
                                card={"owner": "risk <team>",
                                      "description": "<script>alert(1)</script> screening"},
                                **sections))


@pytest.fixture(scope="module")
def first(ray_session, tmp_path_factory, source):
    """v1, auto approval: registered and moved to @champion."""
    storage = str(tmp_path_factory.mktemp("gov") / "store")
    summary = run_job(_spec(storage, source), echo=lambda _: None, actor="it-runner")
    return {"storage": storage, "summary": summary}


def _trail(storage: str) -> list[audit.Event]:
    trail = audit.load_trail(storage, NAME)
    assert trail.problems == []
    return trail.events


def test_registered_event_holds_the_gate_numbers(first):
    summary, storage = first["summary"], first["storage"]
    registered, moved = _trail(storage)[:2]
    assert registered.kind == audit.REGISTERED and registered.actor == "it-runner"
    assert registered.data["version"] == summary.version == "1"
    assert registered.data["run_id"] == summary.run_id
    assert registered.data["metrics"] == summary.metrics
    gate = registered.data["gate"]
    assert gate["passed"] is True and gate["metric"] == "accuracy" and gate["min"] == 0.5
    assert gate["value"] == summary.metrics["accuracy"]
    assert gate["reason"] == summary.verdict.reason
    assert moved.kind == audit.ALIAS_MOVED and moved.data == {
        "alias": "champion", "from": None, "to": "1", "run_id": summary.run_id,
        "cause": "gate passed"}


def test_slices_of_a_non_input_column_equal_a_pandas_groupby(first, source):
    summary, storage = first["summary"], first["storage"]
    spec = _spec(storage, source)
    table = load_table(spec.data, spec.task, spec.evaluate.slices)
    assert "site" not in table.features  # kept for evaluation only
    tracking.use_store(storage)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{summary.version}")
    assert "site" not in [c.name for c in model.metadata.get_input_schema().inputs]
    test = table.dataset("test").to_pandas()
    predicted = model.predict(test[FEATURES])["prediction"].to_numpy()
    expected = (pd.DataFrame({"site": test["site"], "ok": predicted == test["target"]})
                .groupby("site")["ok"].agg(["mean", "size"]))
    shown = {s.value: s for s in summary.slices}
    for site, row in expected.iterrows():
        assert shown[site].metrics["accuracy"] == pytest.approx(row["mean"], abs=1e-12)
        assert shown[site].rows == row["size"]
    assert shown["B"].metrics["accuracy"] < shown["A"].metrics["accuracy"] - 0.1
    # to MLflow: one metric per slice and metric, the table as an artifact, and the version
    run = tracking.client().get_run(summary.run_id)
    assert run.data.metrics["test_slice.site.B.accuracy"] == shown["B"].metrics["accuracy"]
    tagged = card.slices_of(versions.get_version(NAME, summary.version))
    assert tagged == [s.to_json() for s in summary.slices]


def test_a_slice_gap_fails_the_gate_naming_the_slice(first, source):
    storage = first["storage"]
    spec = _spec(storage, source, set={"evaluate.gate.max_slice_gap": 0.05})
    with pytest.raises(GateFailed, match="worst slice site=B: accuracy") as info:
        run_job(spec, echo=lambda _: None)
    failed = info.value.summary
    tracking.use_store(storage)
    assert versions.version_by_alias(NAME, "champion").version == "1"
    registered = [e for e in _trail(storage) if e.kind == audit.REGISTERED][-1]
    assert registered.data["version"] == failed.version
    gate = registered.data["gate"]
    assert gate["passed"] is False and gate["max_slice_gap"] == 0.05
    assert gate["worst_slice"]["slice"] == "site=B" and gate["worst_slice"]["gap"] > 0.05


def test_manual_approval_moves_candidate_then_approve_moves_the_serving_alias(first, source):
    storage = first["storage"]
    spec = _spec(storage, source, register={"approval": "manual"},
                 set={"model.params.C": 0.5})
    summary = run_job(spec, echo=lambda _: None, actor="it-runner")
    version = summary.version
    tracking.use_store(storage)
    assert summary.alias == "candidate" and summary.verdict.passed
    assert versions.version_by_alias(NAME, "candidate").version == version
    assert versions.version_by_alias(NAME, "champion").version == "1"  # serving alias left
    assert approvals.awaiting_approval(NAME, version)
    assert approvals.pending_versions(NAME) == [version]
    alias, before = approvals.approve(storage, NAME, version, "ann", "slices reviewed")
    assert (alias, before) == ("champion", "1")
    assert versions.version_by_alias(NAME, "champion").version == version
    assert not approvals.awaiting_approval(NAME, version)
    approved = _trail(storage)[-1]
    assert approved.kind == audit.APPROVED and approved.actor == "ann"
    assert approved.reason == "slices reviewed"
    assert approved.data == {"version": version, "alias": "champion", "from": "1",
                             "to": version}
    with pytest.raises(Exception, match=f"cannot approve {NAME} v{version}: it was approved"):
        approvals.approve(storage, NAME, version, "ann", "again")


def test_the_card_holds_the_registered_numbers_and_escapes_spec_text(first):
    summary, storage = first["summary"], first["storage"]
    tracking.use_store(storage)
    sections = card.build_card(storage, NAME, summary.version)
    text = card.render_markdown(sections)
    for name, value in summary.metrics.items():
        assert f"**test {name}**: {value:.4f}" in text
    assert summary.verdict.reason in text and f"**run**: {summary.run_id}" in text
    site_b = next(s for s in summary.slices if s.value == "B")
    assert f"| site=B | {site_b.rows} | yes |" in text
    assert "| registered | it-runner |" in text  # its audit history
    info = versions.get_version(NAME, summary.version)
    assert f"**fingerprint**: {info.tags['mlrt.data_fingerprint']}" in text
    assert f"**spec hash**: {info.tags['mlrt.spec_hash']}" in text
    page = card.render_html(sections)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in text and "risk &lt;team>" in text
    logged = mlflow.artifacts.load_text(f"runs:/{summary.run_id}/{card.CARD_FILE}")
    assert logged.startswith(f"# Model card: {NAME} v{summary.version}")


def test_the_trail_matches_the_registry(first):
    storage = first["storage"]
    tracking.use_store(storage)
    found = versions.list_versions(NAME)
    aliases = {a: v.version for v in found for a in v.aliases}
    assert audit.reconcile(_trail(storage), aliases, [v.version for v in found]) == []
    json.dumps([e.to_json() for e in _trail(storage)])  # all JSON
