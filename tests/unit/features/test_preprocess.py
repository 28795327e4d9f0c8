"""Preprocessing plan and the pure transform shared by training, evaluation and serving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from runtime.errors import InputError
from runtime.features.apply import output_columns, transform_frame
from runtime.features.fit import plan_steps
from runtime.features.state import PreprocessState
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


STATE = PreprocessState.from_json({
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
})


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


# --- the one-pass fit (statistics per block, combined, replayed through the steps) ----------


def _one_pass(frame: pd.DataFrame, ops: list, types: dict,
              blocks: int = 3) -> PreprocessState:
    """fit_state without Ray: partial_stats per block, combined on the 'driver'."""
    import pyarrow as pa

    from runtime.features.fit import combine_partials, partial_stats, stat_plan, state_from_stats

    steps = plan_steps(ops, types)
    plan = stat_plan(steps, types)
    edges = np.linspace(0, len(frame), blocks + 1).astype(int)
    rows = [partial_stats(pa.Table.from_pandas(frame.iloc[lo:hi], preserve_index=False),
                          plan).column("stats")[0].as_py()
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return state_from_stats(steps, types, combine_partials(rows))


def test_one_pass_state_equals_fitting_the_steps_in_order():
    rng = np.random.default_rng(3)
    size = rng.normal(10, 3, 500)
    size[rng.random(500) < 0.3] = np.nan
    frame = pd.DataFrame({"size": size, "weight": rng.uniform(1, 9, 500),
                          "color": rng.choice(["red", "blue", None], 500, p=[0.6, 0.3, 0.1])})
    ops = _ops({"op": "impute", "columns": ["size"]},
               {"op": "impute", "columns": ["color"], "strategy": "constant", "fill_value": "n/a"},
               {"op": "standard_scale"}, {"op": "min_max_scale", "columns": ["size"]},
               {"op": "one_hot"})
    state = _one_pass(frame, ops, TYPES)

    # the same steps done one after another on the whole frame
    filled = frame["size"].fillna(frame["size"].mean())
    scaled = (filled - filled.mean()) / filled.std(ddof=0)
    impute, scale, minmax, onehot = state.steps[0], state.steps[2], state.steps[3], \
        state.steps[4]
    assert impute.values["size"] == pytest.approx(frame["size"].mean(), rel=1e-12)
    assert scale.mean["size"] == pytest.approx(filled.mean(), rel=1e-12)
    assert scale.std["size"] == pytest.approx(filled.std(ddof=0), rel=1e-12)
    assert scale.std["weight"] == pytest.approx(frame["weight"].std(ddof=0), rel=1e-12)
    assert minmax.min["size"] == pytest.approx(scaled.min(), rel=1e-12)
    assert minmax.max["size"] == pytest.approx(scaled.max(), rel=1e-12)
    assert onehot.categories == {"color": ["blue", "n/a", "red"]}
    assert state.steps[1].values == {"color": "n/a"}


def test_one_pass_moments_stay_accurate_with_a_large_mean():
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"size": 1e9 + rng.normal(0, 0.01, 3000), "weight": np.arange(3000.0),
                          "color": "red"})
    state = _one_pass(frame, _ops({"op": "standard_scale"}, {"op": "one_hot"}), TYPES, blocks=7)
    assert state.steps[0].std["size"] == pytest.approx(frame["size"].std(ddof=0), rel=1e-6)


def test_one_hot_keeps_the_most_frequent_categories_sorted():
    color = ["red"] * 5 + ["green"] * 3 + ["blue"] * 3 + ["amber"] * 1
    frame = pd.DataFrame({"size": 1.0, "weight": 1.0, "color": color})
    state = _one_pass(frame, _ops({"op": "one_hot", "max_categories": 2}), TYPES)
    # red (5), then green and blue tie at 3: the smaller value wins, so blue
    assert state.steps[0].categories == {"color": ["blue", "red"]}
    state = _one_pass(frame, _ops({"op": "impute", "columns": ["color"],
                                   "strategy": "most_frequent"}, {"op": "one_hot"}), TYPES)
    assert state.steps[0].values == {"color": "red"}
    assert state.steps[1].categories == {"color": ["amber", "blue", "green", "red"]}


def test_one_pass_refuses_what_the_stock_preprocessors_cannot_fit():
    frame = pd.DataFrame({"size": [1.0], "weight": [2.0], "color": [None]})
    with pytest.raises(InputError, match=r"one_hot: column 'color' has 1 missing values"):
        _one_pass(frame, _ops({"op": "one_hot"}), TYPES, blocks=1)
    with pytest.raises(InputError, match=r"fill_value 'x' does not fit the numeric columns"):
        plan_steps(_ops({"op": "impute", "strategy": "constant", "fill_value": "x"},
                        {"op": "one_hot"}), TYPES)
    with pytest.raises(InputError, match=r"\['color'\] are already encoded by an earlier one_hot"):
        plan_steps(_ops({"op": "one_hot"}, {"op": "impute", "columns": ["color"],
                                            "strategy": "most_frequent"}), TYPES)


def test_all_null_column_scales_to_nan_like_the_stock_scaler():
    frame = pd.DataFrame({"size": [np.nan, np.nan], "weight": [1.0, 3.0], "color": "red"})
    state = _one_pass(frame, _ops({"op": "standard_scale"}, {"op": "one_hot"}), TYPES, blocks=2)
    assert state.steps[0].mean == {"size": None, "weight": 2.0}
    assert state.steps[0].std == {"size": None, "weight": 1.0}


# --- the Arrow streaming transform ------------------------------------------------------------


def _arrow_x(state: PreprocessState, frame: pd.DataFrame) -> np.ndarray:
    import pyarrow as pa

    from runtime.features.apply import transform_arrow

    out = transform_arrow(pa.Table.from_pandas(frame, preserve_index=False), state, label="y")
    assert out.column("y").to_pylist() == frame["y"].tolist()
    return out.column("x").combine_chunks().to_numpy()


def test_arrow_transform_equals_transform_frame():
    frame = pd.DataFrame({"weight": [10.0, 12.0, None, 14.0], "size": [4.0, None, 0.0, 2.5],
                          "color": ["red", "blue", "green", None], "y": [1, 0, 1, 0]})
    x = _arrow_x(STATE, frame)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, transform_frame(STATE, frame))


def test_arrow_transform_one_hot_of_a_numeric_column_and_the_pandas_fallback():
    state = PreprocessState.from_json({
        "version": 1, "features": ["size", "color"],
        "feature_types": {"size": "numeric", "color": "numeric"},
        "steps": [{"op": "one_hot", "columns": ["color"], "categories": {"color": [1, 3]}},
                  {"op": "impute", "columns": ["size"], "values": {"size": 0.5}}]})
    frame = pd.DataFrame({"size": [1.0, None, 3.0], "color": [3, 2, 1], "y": ["a", "b", "c"]})
    np.testing.assert_array_equal(_arrow_x(state, frame), transform_frame(state, frame))
    # a text column where the state expects numbers: transform_frame decides (NaN)
    frame["size"] = ["1.5", "x", None]
    np.testing.assert_array_equal(_arrow_x(state, frame), transform_frame(state, frame))


# --- log1p, clip, ordinal, hash_bucket --------------------------------------------------------


def _signed_log1p(x):
    return np.sign(x) * np.log1p(np.abs(x))


def test_stateless_steps_feed_the_statistics_of_later_steps():
    """impute -> clip -> log1p -> standard_scale: the scaler is fitted on the values the
    earlier steps produce (imputed rows included), computed in one pass over 4 blocks."""
    rng = np.random.default_rng(5)
    size = rng.lognormal(2, 1, 800)
    size[rng.random(800) < 0.2] = np.nan
    frame = pd.DataFrame({"size": size, "weight": rng.normal(0, 50, 800),
                          "color": rng.choice(["red", "blue"], 800)})
    ops = _ops({"op": "impute", "columns": ["size"]},
               {"op": "clip", "columns": ["size"], "min": 2.0, "max": 40.0},
               {"op": "log1p", "columns": ["size", "weight"]},
               {"op": "impute", "columns": ["weight"]},
               {"op": "standard_scale"}, {"op": "ordinal"})
    state = _one_pass(frame, ops, TYPES, blocks=4)

    filled = frame["size"].fillna(frame["size"].mean())
    logged = _signed_log1p(filled.clip(2.0, 40.0))
    weight = _signed_log1p(frame["weight"])
    scale = state.steps[4]
    assert scale.mean["size"] == pytest.approx(logged.mean(), rel=1e-12)
    assert scale.std["size"] == pytest.approx(logged.std(ddof=0), rel=1e-12)
    assert scale.mean["weight"] == pytest.approx(weight.mean(), rel=1e-12)
    assert state.steps[1].to_json() == {"op": "clip", "columns": ["size"], "min": 2.0, "max": 40.0}
    assert state.steps[5].categories == {"color": ["blue", "red"]}

    # and the transform does the same arithmetic
    x = transform_frame(state, frame)
    np.testing.assert_allclose(x[:, 0], (logged - logged.mean()) / logged.std(ddof=0),
                               rtol=1e-5)
    assert set(np.unique(x[:, 2])) == {0.0, 1.0}


def test_ordinal_and_hash_bucket_encode_unseen_and_missing_values():
    state = PreprocessState.from_json({
        "version": 1, "features": ["color", "city"],
        "feature_types": {"color": "categorical", "city": "categorical"},
        "steps": [{"op": "ordinal", "columns": ["color"], "categories": {"color": ["blue", "red"]}},
                  {"op": "hash_bucket", "columns": ["city"], "buckets": 4}]})
    assert output_columns(state) == ["color", "city#0", "city#1", "city#2", "city#3"]
    frame = pd.DataFrame({"color": ["red", "blue", "mauve", None],
                          "city": ["Oslo", "Lima", "Oslo", None]})
    x = transform_frame(state, frame)
    np.testing.assert_array_equal(x[:, 0], [1, 0, -1, -1])
    np.testing.assert_array_equal(x[:, 1:].sum(axis=1), [1, 1, 1, 0])  # null: no bucket
    np.testing.assert_array_equal(x[0, 1:], x[2, 1:])  # same value, same bucket


def test_hash_buckets_are_stable_and_spread():
    from runtime.features.apply import bucket_of

    # pinned: a change of hash would silently re-map every served category
    assert [bucket_of(v, 16) for v in ("red", "Oslo", 3)] == [13, 13, 14]
    assert bucket_of("red", 1000) == 261
    assert bucket_of(3, 1000) == bucket_of(3.0, 1000) == bucket_of(np.int64(3), 1000)
    assert bucket_of(None, 8) == bucket_of(float("nan"), 8) == -1
    used = {bucket_of(f"city-{i}", 16) for i in range(200)}
    assert len(used) == 16


def test_new_ops_fail_clearly_in_the_wrong_place():
    with pytest.raises(InputError, match=r"log1p on \['size'\] comes after standard_scale"):
        plan_steps(_ops({"op": "standard_scale"}, {"op": "log1p", "columns": ["size"]},
                        {"op": "one_hot"}), TYPES)
    with pytest.raises(InputError, match=r"clip needs numeric columns, \['color'\]"):
        plan_steps(_ops({"op": "clip", "columns": ["color"], "max": 1}, {"op": "one_hot"}),
                   TYPES)
    with pytest.raises(InputError, match=r"already encoded by an earlier hash_bucket"):
        plan_steps(_ops({"op": "hash_bucket"}, {"op": "ordinal"}), TYPES)
    # an ordinal or hashed categorical needs no one_hot
    assert [op.op for op, _ in plan_steps(_ops({"op": "hash_bucket", "buckets": 8}),
                                          TYPES)] == ["hash_bucket"]


def test_arrow_transform_equals_transform_frame_for_every_op():
    rng = np.random.default_rng(9)
    frame = pd.DataFrame({"size": rng.normal(0, 5, 300), "weight": rng.integers(-3, 9, 300),
                          "color": rng.choice(["red", "blue", "green"], 300).astype(object),
                          "y": np.arange(300)})
    frame.loc[::7, "size"] = np.nan
    frame.loc[::11, "color"] = None
    for encoder in ({"op": "ordinal"}, {"op": "hash_bucket", "buckets": 5}, {"op": "one_hot"}):
        ops = _ops({"op": "impute", "columns": ["size"]}, {"op": "clip", "min": -4, "max": 6},
                   {"op": "log1p", "columns": ["size"]}, {"op": "min_max_scale"},
                   {"op": "impute", "columns": ["color"], "strategy": "constant",
                    "fill_value": "none"}, encoder)
        state = _one_pass(frame.drop(columns="y"), ops, TYPES)
        np.testing.assert_array_equal(_arrow_x(state, frame), transform_frame(state, frame))
    numeric = PreprocessState.from_json({
        "version": 1, "features": ["weight"], "feature_types": {"weight": "numeric"},
        "steps": [{"op": "hash_bucket", "columns": ["weight"], "buckets": 7}]})
    np.testing.assert_array_equal(_arrow_x(numeric, frame), transform_frame(numeric, frame))


def test_numeric_rows_transform_equals_transform_frame():
    """Serving's pandas-free path (transform_numeric / Predictor.predict_rows) gives
    transform_frame's numbers for every numeric op, nulls and unfitted columns included; a
    state with an encoder still goes through pandas and gives the same numbers."""
    from runtime.features.apply import transform_numeric

    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"size": rng.normal(0, 5, 200), "weight": rng.integers(-3, 9, 200)})
    frame.loc[::5, "size"] = np.nan
    types = {"size": "numeric", "weight": "numeric"}
    for ops in (
        _ops({"op": "impute", "columns": ["size"]}, {"op": "clip", "min": -4, "max": 6},
             {"op": "log1p", "columns": ["size"]}, {"op": "standard_scale"}),
        _ops({"op": "min_max_scale", "columns": ["weight"]}),  # size: NaN passes through
        _ops({"op": "hash_bucket", "columns": ["weight"], "buckets": 4}),
    ):
        state = _one_pass(frame, ops, types)
        x = transform_numeric(state, frame[list(state.features)].to_numpy(dtype=np.float64))
        assert x.dtype == np.float32 and x.flags.c_contiguous  # as the model saw in training
        np.testing.assert_array_equal(x, transform_frame(state, frame))
    all_null = _one_pass(frame.assign(size=np.nan), _ops({"op": "standard_scale"}), types)
    rows = frame[list(all_null.features)].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(transform_numeric(all_null, rows),
                                  transform_frame(all_null, frame))
    with pytest.raises(InputError, match="expected rows of 2 values"):
        transform_numeric(all_null, rows[:, :1])
