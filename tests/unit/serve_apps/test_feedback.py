"""Unit: feedback bodies (labels by request id) and the serve-time capture checks. No Ray."""

from __future__ import annotations

import json

import pytest

from runtime.errors import InputError
from runtime.spec import Capture
from serve_apps.capture_hook import check_capture
from serve_apps.feedback import MAX_LABELS, parse_labels
from serve_apps.validate import BadRequest


def _body(*entries) -> bytes:
    return json.dumps({"labels": list(entries)}).encode()


def test_classifier_labels_are_classes_in_any_spelling():
    ids, labels = parse_labels(_body({"request_id": "a", "label": 1},
                                     {"request_id": "b", "label": "0"},
                                     {"request_id": "c", "label": 1.0}), [0, 1])
    assert ids == ["a", "b", "c"] and labels == ["1", "0", "1"]
    assert parse_labels(_body({"request_id": "a", "label": "yes"}), ["no", "yes"])[1] == ["yes"]


def test_regressor_labels_are_numbers():
    assert parse_labels(_body({"request_id": "a", "label": 2}), None)[1] == [2.0]


@pytest.mark.parametrize(("body", "classes", "message"), [
    (_body({"request_id": "a", "label": 1}, {"request_id": "b", "label": 7}), [0, 1],
     "labels[1].label: 7 is not one of the model's classes [0, 1]"),
    (_body({"request_id": "a", "label": True}), [0, 1], "labels[0].label: a boolean true is not"),
    (_body({"request_id": "a", "label": "high"}), None,
     'labels[0].label: the model is a regressor, the label must be a finite number, got a '
     'string "high"'),
    (_body({"request_id": "a b", "label": 1}), [0, 1], "labels[0].request_id: must be 1-128"),
    (_body({"request_id": "x" * 129, "label": 1}), [0, 1], "labels[0].request_id"),
    (_body({"request_id": "a"}), [0, 1], "labels[0]: must be an object with request_id and"),
    (json.dumps({"labels": []}).encode(), [0, 1], "labels must be a non-empty list"),
    (json.dumps({"labels": [], "x": 1}).encode(), [0, 1], "no other field"),
    (b"{", [0, 1], "body is not valid JSON"),
    (_body(*[{"request_id": "a", "label": 1}] * (MAX_LABELS + 1)), [0, 1],
     f"at most {MAX_LABELS} per request"),
])
def test_bad_labels_are_422_naming_the_entry(body, classes, message):
    with pytest.raises(BadRequest) as info:
        parse_labels(body, classes)
    assert info.value.status == 422 and message in info.value.message, info.value.message


def test_capture_names_are_checked_against_the_served_model(monkeypatch):
    features = ["age", "email"]
    check_capture(None, ["time"])  # capture off: nothing to check
    check_capture(Capture(exclude=["age"]), features)
    with pytest.raises(InputError, match=r"serve.capture.exclude\[0\]: 'agee' is not a feature"):
        check_capture(Capture(exclude=["agee"]), features)
    with pytest.raises(InputError, match=r"feature\(s\) \['model'\] clash"):
        check_capture(Capture(), ["model", "age"])
    monkeypatch.delenv("MLRT_CAPTURE_SALT", raising=False)
    with pytest.raises(InputError, match="serve.capture.salt_env: set MLRT_CAPTURE_SALT"):
        check_capture(Capture(hash=["email"]), features)
    monkeypatch.setenv("MLRT_CAPTURE_SALT", "pepper")
    check_capture(Capture(hash=["email"]), features)



def test_replica_capture_records_the_arm_and_alias_of_the_version_that_answered(tmp_path):
    from types import SimpleNamespace

    import numpy as np
    import pyarrow.parquet as pq

    from runtime.spec import Canary
    from serve_apps.capture_hook import ReplicaCapture
    from serve_apps.routing import Loaded, Routing
    from serve_apps.validate import Features

    # what on_prediction reads of serve_apps.routing.VersionRouter
    registry = SimpleNamespace(alias="champion", canary=Canary(alias="challenger"))

    features = Features(("a", "b"), frozenset(), frozenset())
    stable, canary = (Loaded("m", v, None, features) for v in ("1", "2"))
    routing = Routing(stable, "champion", canary, 0.5)
    capture = ReplicaCapture(Capture(flush_s=60), str(tmp_path), "m", regression=False)
    for loaded, rid in ((stable, "s"), (canary, "c")):
        capture.on_prediction(loaded, routing, registry, rid, np.ones((1, 2)), np.array([1]),
                              np.array([[0.2, 0.8]]), 3.0)
    accepted = capture.add_labels(["s"], ["1"])
    capture.close()
    rows = pq.read_table(sorted((tmp_path / "captures" / "m").rglob("*.parquet")),
                         partitioning=None).to_pylist()
    assert {(r["request_id"], r["version"], r["arm"], r["alias"]) for r in rows} == {
        ("s", "1", "stable", "champion"), ("c", "2", "canary", "challenger")}
    assert accepted == 1 and list((tmp_path / "labels" / "m").rglob("*.parquet"))
