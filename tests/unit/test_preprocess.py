"""Preprocessing plan and the pure transform shared by training, evaluation and serving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from runtime.errors import InputError
from runtime.preprocess import output_columns, plan_steps, transform_frame
from runtime.spec import Data

TYPES = {"size": "numeric", "weight": "numeric", "color": "categorical"}


def _ops(*ops):
    return Data(source={"kind": "csv", "path": "x"}, preprocess=list(ops)).preprocess


def test_plan_resolves_selectors():
    steps = plan_steps(_ops({"op": "impute"}, {"op": "standard_scale"}, {"op": "one_hot"}), TYPES)
    assert [(op.op, cols) for op, cols in steps] == [
        ("impute", ["size", "weight"]),
        ("standard_scale", ["size", "weight"]),
        ("one_hot", ["color"]),
    ]


def test_plan_errors_name_the_op_and_columns():
    with pytest.raises(InputError, match=r"data.preprocess\[0\]: standard_scale needs numeric "
                                         r"columns, \['color'\] are categorical"):
        plan_steps(_ops({"op": "standard_scale", "columns": ["color"]}, {"op": "one_hot"}), TYPES)
    with pytest.raises(InputError, match=r"data.preprocess\[0\].columns: \['height'\] are not"):
        plan_steps(_ops({"op": "min_max_scale", "columns": ["height"]}), TYPES)
    with pytest.raises(InputError, match=r"categorical features \['color'\] need an encoding"):
        plan_steps(_ops({"op": "standard_scale"}), TYPES)


STATE = {
    "version": 1,
    "features": ["size", "color", "weight"],
    "feature_types": {"size": "numeric", "color": "categorical", "weight": "numeric"},
    "steps": [
        {"op": "impute", "columns": ["size"], "values": {"size": 2.0}},
        {"op": "standard_scale", "columns": ["size"], "mean": {"size": 2.0}, "std": {"size": 2.0}},
        {"op": "min_max_scale", "columns": ["weight"], "min": {"weight": 10.0},
         "max": {"weight": 10.0}},
        {"op": "one_hot", "columns": ["color"], "categories": {"color": ["blue", "red"]}},
    ],
}


def test_transform_applies_steps_in_order():
    frame = pd.DataFrame({"weight": [10.0, 12.0, 14.0], "size": [4.0, None, 0.0],
                          "color": ["red", "blue", "green"]})
    x = transform_frame(STATE, frame)
    assert x.dtype == np.float32
    assert output_columns(STATE) == ["size", "color=blue", "color=red", "weight"]
    # size: impute 2.0 -> scale (x-2)/2; constant weight range -> divide by 1; unknown color -> 0s
    np.testing.assert_allclose(x, [[1, 0, 1, 0], [0, 1, 0, 2], [-1, 0, 0, 4]])


def test_transform_names_missing_columns():
    with pytest.raises(InputError, match=r"missing feature columns: \['weight'\]"):
        transform_frame(STATE, pd.DataFrame({"size": [1.0], "color": ["red"]}))
