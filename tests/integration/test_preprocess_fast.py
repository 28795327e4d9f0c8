"""Integration: the one-pass fit equals Ray Data's stock preprocessors fitted as a Chain, and the
Arrow streaming transform equals the shared pandas transform, on a real (shared) Ray."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from runtime.features.apply import transform_arrow, transform_frame
from runtime.features.fit import fit_state, plan_steps
from runtime.features.state import PreprocessState
from runtime.spec import Data, Impute, MinMaxScale, OneHot, StandardScale

pytestmark = pytest.mark.integration

TYPES = {"a": "numeric", "b": "numeric", "c": "numeric", "d": "numeric", "color": "categorical",
         "size": "categorical"}
OPS = [
    {"op": "impute", "columns": ["b"], "strategy": "mean"},
    {"op": "impute", "columns": ["d"], "strategy": "constant", "fill_value": 100.0},
    {"op": "impute", "columns": ["color"], "strategy": "most_frequent"},
    {"op": "standard_scale", "columns": ["a", "b", "d"]},
    {"op": "min_max_scale", "columns": ["a", "c"]},  # a: min/max of the already scaled column
    {"op": "one_hot", "columns": ["color"]},
    {"op": "one_hot", "columns": ["size"], "max_categories": 3},
]


def _frame(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    b = rng.uniform(-1, 3, rows)
    b[rng.random(rows) < 0.2] = np.nan
    d = rng.normal(1e6, 0.5, rows)  # large mean, small spread: the moments must not cancel
    d[rng.random(rows) < 0.1] = np.nan
    color = rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]).astype(object)
    color[rng.random(rows) < 0.1] = None
    # distinct frequencies, so "the 3 most frequent" has one answer
    size = rng.choice(["xs", "s", "m", "l", "xl", "xxl"], rows,
                      p=[0.05, 0.25, 0.3, 0.2, 0.12, 0.08])
    return pd.DataFrame({"a": rng.normal(5, 2, rows), "b": b, "c": rng.integers(0, 50, rows),
                         "d": d, "color": color, "size": size, "id": np.arange(rows)})


def _ops(raw: list[dict]) -> list:
    return list(Data(source={"kind": "csv", "path": "x"}, preprocess=raw).preprocess)


def _split(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    edges = np.linspace(0, len(frame), n + 1).astype(int)
    return [frame.iloc[lo:hi] for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def _blocks(frame: pd.DataFrame, n: int = 4):
    import ray.data

    return ray.data.from_pandas(_split(frame, n))


def stock_state(ops: list, ds, feature_types: dict[str, str]) -> dict:
    """The state as mlrt used to build it: Ray's stock preprocessors, fitted as a Chain."""
    from ray.data.preprocessors import (
        Chain,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        SimpleImputer,
        StandardScaler,
    )

    steps = plan_steps(ops, feature_types)
    fitted = []
    for op, columns in steps:
        if isinstance(op, StandardScale):
            fitted.append(StandardScaler(columns=columns))
        elif isinstance(op, MinMaxScale):
            fitted.append(MinMaxScaler(columns=columns))
        elif isinstance(op, OneHot):
            fitted.append(OneHotEncoder(columns=columns, max_categories={
                c: op.max_categories for c in columns} if op.max_categories else None))
        elif op.op == "ordinal":
            fitted.append(OrdinalEncoder(columns=columns))
        else:
            fitted.append(SimpleImputer(columns=columns, strategy=op.strategy,
                                        fill_value=op.fill_value))
    Chain(*fitted).fit(ds)
    return {"version": 1, "features": list(feature_types), "feature_types": dict(feature_types),
            "steps": [_stock_step(op, cols, p.stats_)
                      for (op, cols), p in zip(steps, fitted, strict=True)]}


def _stock_step(op, columns: list[str], stats: dict) -> dict:
    state: dict = {"op": op.op, "columns": columns}
    if isinstance(op, StandardScale):
        state["mean"] = {c: float(stats[f"mean({c})"]) for c in columns}
        state["std"] = {c: float(stats[f"std({c})"]) for c in columns}
    elif isinstance(op, MinMaxScale):
        state["min"] = {c: float(stats[f"min({c})"]) for c in columns}
        state["max"] = {c: float(stats[f"max({c})"]) for c in columns}
    elif op.op in ("one_hot", "ordinal"):
        state["categories"] = {c: _stock_categories(stats[f"unique_values({c})"])
                               for c in columns}
    elif isinstance(op, Impute) and op.strategy == "constant":
        state["values"] = {c: op.fill_value for c in columns}
    else:
        state["values"] = {c: _py(stats[f"{op.strategy}({c})"]) for c in columns}
    return state


def _stock_categories(stat) -> list:
    if isinstance(stat, dict):
        pairs = stat.items()
    else:
        keys, indices = stat
        pairs = zip(keys.to_pylist(), indices.to_pylist(), strict=False)
    return [_py(value) for value, _ in sorted(pairs, key=lambda kv: kv[1])]


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


def _assert_same_state(state: PreprocessState, theirs: dict) -> None:
    ours = state.to_json()  # the preprocess.json a model version holds
    assert ours.keys() == theirs.keys()
    assert ours["features"] == theirs["features"]
    for mine, stock in zip(ours["steps"], theirs["steps"], strict=True):
        assert mine.keys() == stock.keys(), mine["op"]
        for key in mine:
            if key in ("op", "columns", "categories"):
                assert mine[key] == stock[key], (mine["op"], key)
                continue
            for column, value in mine[key].items():
                other = stock[key][column]
                if isinstance(value, float):
                    assert math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-12), \
                        (mine["op"], key, column, value, other)
                else:
                    assert value == other, (mine["op"], key, column)


def test_one_pass_state_equals_the_stock_chain(ray_session):
    frame = _frame()
    features = frame.drop(columns="id")
    ours = fit_state(_ops(OPS), _blocks(features), TYPES)
    theirs = stock_state(_ops(OPS), _blocks(features), TYPES)
    _assert_same_state(ours, theirs)
    # the parts that are easy to get subtly wrong, spelled out
    size = next(s for s in ours.steps if s.columns == ("size",))
    assert size.categories == {"size": ["l", "m", "s"]}  # top 3 by count, then sorted
    assert ours.steps[2].values == {"color": "red"}


def test_ordinal_categories_equal_the_stock_ordinal_encoder(ray_session):
    ops = _ops([{"op": "impute", "columns": ["color"], "strategy": "most_frequent"},
                {"op": "ordinal", "columns": ["size", "color"]}])
    features = _frame(1200, seed=4).drop(columns="id")
    ours = fit_state(ops, _blocks(features), TYPES)
    _assert_same_state(ours, stock_state(ops, _blocks(features), TYPES))
    assert ours.steps[1].categories["size"] == ["l", "m", "s", "xl", "xs", "xxl"]


def test_one_pass_state_from_parquet_blocks(ray_session, tmp_path):
    """Arrow blocks from parquet (several files) fit the same as pandas blocks."""
    import ray.data

    frame = _frame(3000, seed=1)
    for i, part in enumerate(_split(frame.drop(columns="id"), 3)):
        part.to_parquet(tmp_path / f"part-{i}.parquet")
    ours = fit_state(_ops(OPS), ray.data.read_parquet(str(tmp_path)), TYPES)
    theirs = stock_state(_ops(OPS), _blocks(frame.drop(columns="id"), 3), TYPES)
    _assert_same_state(ours, theirs)


def test_arrow_transform_equals_transform_frame(ray_session):
    frame = _frame(1500, seed=2)
    ds = _blocks(frame, 3)
    state = fit_state(_ops(OPS), ds, TYPES)
    out = ds.map_batches(transform_arrow, batch_format="pyarrow",
                         fn_kwargs={"state": state, "label": "id"}).to_pandas()
    order = np.argsort(out["id"].to_numpy())
    x = np.stack(out["x"].to_numpy())[order]
    assert x.dtype == np.float32
    np.testing.assert_array_equal(out["id"].to_numpy()[order], frame["id"].to_numpy())
    np.testing.assert_array_equal(x, transform_frame(state, frame))


def test_one_hot_column_with_nulls_is_refused_like_the_stock_encoder(ray_session):
    from runtime.errors import InputError

    frame = _frame(200).drop(columns="id")
    with pytest.raises(InputError, match=r"one_hot: column 'color' has \d+ missing values"):
        fit_state(_ops([{"op": "one_hot"}]), _blocks(frame), TYPES)
