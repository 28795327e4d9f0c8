"""Data stage pure functions: splits, checks, fingerprints, column selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from runtime.data.scan import assign_splits, check_frame
from runtime.data.scan import frame_fingerprint as fingerprint
from runtime.data.sources import synthetic_chunk
from runtime.data.table import load_table, select_features, split_frame
from runtime.errors import DataCheckError, InputError
from runtime.spec import Checks, Data, Split


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "a": rng.normal(size=1000),
        "b": rng.integers(0, 5, size=1000),
        "target": np.repeat([0, 1, 2, 3], [400, 300, 200, 100]),
    })


def test_split_is_disjoint_and_complete(frame):
    parts = split_frame(frame, Split(test=0.2, validation=0.1, seed=3), "target")
    indices = [set(p.index) for p in parts.values()]
    assert sum(map(len, indices)) == len(frame)
    assert set().union(*indices) == set(frame.index)
    assert not (indices[0] & indices[1]) and not (indices[0] & indices[2])
    assert not (indices[1] & indices[2])
    assert len(parts["test"]) == 200 and len(parts["validation"]) == 100


def test_split_is_seeded(frame):
    first = split_frame(frame, Split(seed=5), "target")
    again = split_frame(frame, Split(seed=5), "target")
    other = split_frame(frame, Split(seed=6), "target")
    assert list(first["test"].index) == list(again["test"].index)
    assert list(first["test"].index) != list(other["test"].index)


def test_stratified_split_keeps_class_shares(frame):
    parts = split_frame(frame, Split(test=0.2, seed=1), "target")
    shares = parts["test"]["target"].value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(shares.to_numpy(), [0.4, 0.3, 0.2, 0.1], atol=0.01)


def test_unstratifiable_split_names_the_column():
    tiny = pd.DataFrame({"a": range(20), "target": [0] * 19 + [1]})
    with pytest.raises(DataCheckError, match="cannot stratify on 'target'"):
        split_frame(tiny, Split(test=0.2), "target")


def test_checks_report_each_failure(frame):
    frame.loc[:99, "a"] = np.nan
    failures = check_frame(frame, Checks(min_rows=5000, max_null_fraction=0.05))[1].failures
    assert failures == [
        "data.checks.max_null_fraction: column 'a' is 10.0% null, allowed 5.0%",
        "data.checks.min_rows: 1000 rows, need >= 5000",
    ]
    assert check_frame(frame, Checks(min_rows=10, max_null_fraction=0.1))[1].failures == []


def test_fingerprint_stable_and_sensitive(frame):
    assert fingerprint(frame) == fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[7, "a"] += 1e-9
    assert fingerprint(changed) != fingerprint(frame)
    assert fingerprint(frame.rename(columns={"a": "z"})) != fingerprint(frame)


def test_select_features_names_missing(frame):
    spec = Data(source={"kind": "csv", "path": "x.csv"}, target="label")
    with pytest.raises(InputError, match=r"data.target: no column 'label' in the source"):
        select_features(list(frame.columns), spec)
    spec = Data(source={"kind": "csv", "path": "x.csv"}, features=["a", "zz"])
    with pytest.raises(InputError, match=r"data.features: no column \['zz'\]"):
        select_features(list(frame.columns), spec)
    assert select_features(list(frame.columns), Data(source={"kind": "csv", "path": "x"})) == [
        "a", "b"]


def test_load_table_from_sklearn_source():
    data = Data(source={"kind": "sklearn", "name": "iris"}, checks={"min_rows": 100})
    table = load_table(data, "classification")
    assert table.rows == 150 and len(table.features) == 4
    assert table.classes == [0, 1, 2]
    assert all(t == "numeric" for t in table.feature_types.values())
    with pytest.raises(DataCheckError, match="min_rows: 150 rows, need >= 1000"):
        load_table(Data(source={"kind": "sklearn", "name": "iris"},
                        checks={"min_rows": 1000}), "classification")


def test_synthetic_chunks_are_deterministic():
    source = Data(source={"kind": "synthetic", "rows": 500, "features": 4, "classes": 3,
                          "seed": 1}).source
    a, b = synthetic_chunk(source, 0, 300), synthetic_chunk(source, 0, 300)
    pd.testing.assert_frame_equal(a, b)
    assert len(synthetic_chunk(source, 1, 300)) == 200 and set(a["target"]) == {0, 1, 2}


def test_hash_split_is_seeded_and_sized():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 100_000, dtype=np.uint64) * np.uint64(2)
    ids = assign_splits(hashes, Split(test=0.2, validation=0.1, seed=3))
    assert np.bincount(ids) / len(ids) == pytest.approx([0.7, 0.1, 0.2], abs=0.01)
    assert (assign_splits(hashes, Split(test=0.2, validation=0.1, seed=3)) == ids).all()
    assert (assign_splits(hashes, Split(test=0.2, validation=0.1, seed=4)) != ids).mean() > 0.3


@pytest.fixture
def people():
    return pd.DataFrame({
        "age": [25, 40, -3, 130, 200, np.nan],
        "color": ["red", "blue", "red", "mauve", None, "blue"],
        "score": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5],
    })


def _checks(**kwargs) -> Checks:
    return Checks(**kwargs)


def test_range_and_allowed_checks_stop_naming_column_and_count(people):
    checks = _checks(columns={"age": {"min": 0, "max": 120},
                              "color": {"allowed": ["red", "blue"]}})
    _, report = check_frame(people, checks)
    assert report.failing_rows == {"columns.age.min": 1, "columns.age.max": 2,
                                   "columns.color.allowed": 1}
    assert report.failures[0] == ("data.checks.columns.age.min: 1 rows of 'age' below 0.0 "
                                  "(e.g. -3.0); set on_fail: drop_rows to drop them")
    assert "2 rows of 'age' above 120.0 (e.g. 130.0, 200.0)" in report.failures[1]
    assert "1 rows of 'color' not in ['red', 'blue'] (e.g. 'mauve')" in report.failures[2]
    assert set(report.sample["failed_check"]) == set(report.failing_rows)


def test_drop_rows_keeps_going_and_counts(people):
    checks = _checks(columns={"age": {"min": 0, "max": 120}}, on_fail="drop_rows")
    kept, report = check_frame(people, checks)
    assert report.failures == [] and report.dropped_rows == 3
    assert kept["age"].tolist()[:2] == [25, 40] and len(kept) == 3  # the null age is kept
    _, strict = check_frame(people, _checks(columns={"age": {"min": 0}}, on_fail="drop_rows",
                                            min_rows=6))
    assert strict.failures == ["data.checks.min_rows: 5 rows after dropping 1, need >= 6"]


def test_dtype_and_per_column_null_checks(people):
    checks = _checks(columns={"color": {"dtype": "numeric", "max_null_fraction": 0.5},
                              "score": {"dtype": "integer"}, "age": {"dtype": "numeric"}},
                     max_null_fraction=0.0)
    failures = check_frame(people, checks)[1].failures
    assert failures == [
        f"data.checks.columns.color.dtype: column 'color' is {people['color'].dtype}, "
        "expected numeric",
        "data.checks.columns.score.dtype: column 'score' is float64, expected integer",
        "data.checks.max_null_fraction: column 'age' is 16.7% null, allowed 0.0%",
    ]


def test_checks_on_unknown_column_name_it(people):
    with pytest.raises(InputError, match=r"data.checks.columns: no column \['agee'\]"):
        check_frame(people, _checks(columns={"agee": {"min": 0}}))


def test_profile_describes_each_feature():
    from runtime.data.profile import profile_frame

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, None], "c": ["a", "b", "a", None, "a"]})
    profile = profile_frame(frame, {"x": "numeric", "c": "categorical"})
    x, c = profile["features"]["x"], profile["features"]["c"]
    assert profile["rows"] == 5
    assert (x["count"], x["nulls"], x["mean"], x["min"], x["max"]) == (4, 1, 2.5, 1.0, 4.0)
    assert x["std"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert x["quantiles"]["p50"] == 2.5 and sum(x["histogram"]["counts"]) == 4
    assert c == {"type": "categorical", "count": 4, "nulls": 1, "distinct": 2,
                 "frequencies": {"a": 3, "b": 1}}
