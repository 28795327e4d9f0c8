"""Unit: request bodies -> rows or a 4xx naming the row and feature (no Ray, no HTTP)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.spec import parse_spec
from serve_apps.openapi import predict_body, row_object
from serve_apps.predictor import deployment_options
from serve_apps.validate import BadRequest, Features, parse_body

NUMERIC = Features(("a", "b"), frozenset(), frozenset())
MIXED = Features(("x", "color"), frozenset({"color"}), frozenset({"x"}))


def _body(*rows) -> bytes:
    return json.dumps({"instances": list(rows)}).encode()


def test_numeric_rows_by_position_or_name_give_one_matrix():
    got = parse_body(_body([1, 2.5], {"b": 4, "a": 3}), NUMERIC)
    np.testing.assert_array_equal(got, np.array([[1, 2.5], [3, 4]]))


def test_mixed_rows_keep_categories_and_imputed_nulls():
    assert parse_body(_body([None, "red"], {"x": 1.5, "color": "blue"}), MIXED) == [
        [None, "red"], [1.5, "blue"]]


@pytest.mark.parametrize("body, status, message", [
    (_body([1]), 422, "instances[0]: expected 2 features in this order ['a', 'b'] (2), got 1"),
    (_body([1, 2], {"a": 1}), 422, "instances[1]: missing feature(s) ['b'] (1)"),
    (_body({"a": 1, "b": 2, "c": 3}), 422, "instances[0]: unknown feature name(s) ['c'] (1)"),
    (_body([1, "2"]), 422, "instances[0]: feature 'b' must be a number, got a string \"2\""),
    (_body([1, None]), 422, "instances[0]: feature 'b' is null"),
    (_body([1, False]), 422, "instances[0]: feature 'b' must be a number, got a boolean"),
    (_body([1, 2], [float("nan"), 1]), 422,
     "instances[1]: feature 'a' must be a finite number, got nan"),
    (_body([10**400, 1]), 422, "instances[0]: feature 'a' must be a finite number"),
    (b"[1, 2]", 422, 'body must be a JSON object {"instances": [row, ...]}'),
    (b'{"instances": [[1, 2]], "x": 1}', 422, "unknown top-level field(s) ['x']"),
    (b"\xff\xfe", 422, "body is not valid JSON"),
])
def test_bad_bodies_name_the_row_and_feature(body, status, message):
    with pytest.raises(BadRequest) as e:
        parse_body(body, NUMERIC)
    assert e.value.status == status and message in e.value.message


def test_huge_numbers_are_a_422_or_a_category_never_a_crash():
    # an int beyond float range: a category for a categorical feature, not a number otherwise
    assert parse_body(_body([1.0, 10**400]), MIXED) == [[1.0, 10**400]]
    with pytest.raises(BadRequest, match=r"instances\[0\]: feature 'x' must be a finite number"):
        parse_body(_body([10**400, "red"]), MIXED)
    # the same bound whether or not the model has categorical features, exact for big ints
    assert parse_body(_body([1e19, "red"]), MIXED) == [[1e19, "red"]]
    np.testing.assert_array_equal(parse_body(_body([-1e19, 10**19]), NUMERIC), [[-1e19, 1e19]])
    for features, row in ((MIXED, [1e301, "red"]), (NUMERIC, [1e301, 1]),
                          (NUMERIC, [1, 10**19 + 1]), (MIXED, [10**19 + 1, "red"])):
        with pytest.raises(BadRequest, match="must be a finite number within ±1e\\+19"):
            parse_body(_body(row), features)


def test_categorical_feature_rejects_objects():
    with pytest.raises(BadRequest, match=r"instances\[0\]: feature 'color' must be a category"):
        parse_body(_body([1, {"no": 1}]), MIXED)


def test_request_schema_is_generated_from_the_features():
    row = row_object(MIXED)
    assert set(row["properties"]) == {"x", "color"} and row["additionalProperties"] is False
    assert row["properties"]["x"]["type"] == ["number", "null"]  # imputed: may be null
    assert predict_body()["properties"]["instances"]["minItems"] == 1


def test_deployment_options_follow_the_serve_spec():
    spec = parse_spec({
        "name": "m", "task": "classification",
        "data": {"source": {"kind": "sklearn", "name": "iris"}},
        "model": {"kind": "torch_mlp"},
        "serve": {"replicas": {"min": 0, "max": 3, "target_ongoing_requests": 2},
                  "cpus_per_replica": 0.25, "max_queued_requests": 7,
                  "batch": {"max_size": 16, "wait_ms": 3}},
    })
    options = deployment_options(spec.serve)
    assert options["autoscaling_config"]["min_replicas"] == 0
    assert options["autoscaling_config"]["max_replicas"] == 3
    assert options["autoscaling_config"]["target_ongoing_requests"] == 2
    assert options["ray_actor_options"] == {"num_cpus": 0.25}
    assert options["max_queued_requests"] == 7
    assert options["max_ongoing_requests"] >= 16  # a full batch fits


def test_config_builder_takes_one_argument():
    """`serve run`/`serve deploy` call an import_path builder with exactly the args dict."""
    import inspect

    from serve_apps.predictor import build_app

    assert list(inspect.signature(build_app).parameters) == ["args"]
