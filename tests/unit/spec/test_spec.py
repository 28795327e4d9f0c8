"""Spec validation: every bad spec fails before Ray starts, naming the field and the value."""

from __future__ import annotations

import json

import pytest
import yaml

from runtime.spec import SpecError, json_schema, load_spec, parse_spec

GOOD = {
    "name": "digits-mlp",
    "task": "classification",
    "data": {
        "source": {"kind": "sklearn", "name": "digits"},
        "split": {"test": 0.2, "validation": 0.1, "seed": 7},
        "preprocess": [{"op": "standard_scale", "columns": "numeric"}],
        "checks": {"min_rows": 100},
    },
    "model": {"kind": "torch_mlp", "hidden": [32]},
    "train": {"epochs": 2, "workers": 2},
    "evaluate": {"metrics": ["accuracy", "f1_macro"], "gate": {"metric": "accuracy", "min": 0.5}},
}


def _with(**changes) -> dict:
    spec = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        node = spec
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(last)
        else:
            node[last] = value
    return spec


_DELETE = object()

BAD_SPECS = [
    (_with(train__workers=0), "train.workers: must be >= 1, got 0"),
    (_with(train__single_process_below_mb=-1),
     "train.single_process_below_mb: must be >= 0, got -1"),
    (_with(train__epochs="ten"), "train.epochs: must be a valid integer"),
    (_with(train__lr=-0.1), "train.lr: must be > 0, got -0.1"),
    (_with(train__epoch=3), "train.epoch: unknown field 'epoch'; did you mean 'epochs'?"),
    (_with(trian={"epochs": 1}), "trian: unknown field 'trian'; did you mean 'train'?"),
    (_with(name=_DELETE), "name: required field is missing"),
    (_with(task="clustering"), "task: must be 'classification' or 'regression', got 'clustering'"),
    (_with(model={"kind": "xgboost"}),
     "model: unknown kind 'xgboost'; choose from 'torch_mlp', 'sklearn', 'python'"),
    (_with(model={"kind": "torch_mlp", "hidden": [64, 0]}), "model.hidden[1]: must be >= 1, got 0"),
    (_with(model={"kind": "torch_mlp", "dropout": 1.5}), "model.dropout: must be < 1, got 1.5"),
    (_with(model={"kind": "sklearn", "estimator": "os.system"}), "model.estimator: must match"),
    (_with(model={"kind": "python", "builder": "jobs/models.py"}), "model.builder: must match"),
    (_with(data__source={"kind": "sklearn", "name": "mnist"}),
     "data.source.name: must be 'digits', 'breast_cancer', 'wine', 'iris' or 'diabetes', "
     "got 'mnist'"),
    (_with(data__source={"kind": "parquet"}), "data.source.path: required field is missing"),
    (_with(data__split={"test": 0.6, "validation": 0.4}),
     "data.split: test + validation must leave >= 10% for training, got 0.6 + 0.4"),
    (_with(data__split={"test": 0}), "data.split.test: must be > 0, got 0"),
    (_with(data__preprocess=[{"op": "scale"}]),
     "data.preprocess[0]: unknown op 'scale'; choose from"),
    (_with(data__preprocess=[{"op": "one_hot", "colums": ["a"]}]),
     "data.preprocess[0].colums: unknown field 'colums'; did you mean 'columns'?"),
    (_with(data__preprocess=[{"op": "impute", "strategy": "constant"}]),
     "data.preprocess[0]: strategy 'constant' needs fill_value"),
    (_with(data__preprocess=[{"op": "clip", "columns": ["a"]}]),
     "data.preprocess[0]: clip needs min, max or both"),
    (_with(data__preprocess=[{"op": "hash_bucket", "buckets": 1}]),
     "data.preprocess[0].buckets: must be >= 2, got 1"),
    (_with(data__checks={"max_null_fraction": 2}),
     "data.checks.max_null_fraction: must be <= 1, got 2"),
    (_with(data__features=["a", "a"]), "data.features: columns listed twice: ['a']"),
    (_with(data__features=["target"]), "data: the target 'target' cannot also be a feature"),
    (_with(evaluate={"metrics": ["rmse"]}),
     "evaluate.metrics: 'rmse' is not a classification metric"),
    (_with(evaluate={"gate": {"metric": "r2", "min": 0.5}}),
     "evaluate.gate.metric: 'r2' is not a classification metric"),
    (_with(register={"alias": "latest"}), "register.alias: 'latest' is reserved by MLflow"),
    (_with(task="regression", data__split={"stratify": True}, evaluate={}),
     "data.split.stratify: stratified splits need a classification task"),
    (_with(serve={"replicas": {"min": 3, "max": 2}}),
     "serve.replicas: min (3) must be <= max (2)"),
    (_with(tune={"space": {"train.lrr": {"uniform": [0, 1]}}}),
     "tune.space.train.lrr: names no field: train has no 'lrr'"),
    (_with(tune={"space": {"train.lr": {"loguniform": [0, 1]}}}),
     "tune.space: train.lr: loguniform needs low > 0, got 0"),
    (_with(tune={"space": {"train.lr": {"uniform": [1], "choice": [1]}}}),
     "tune.space: train.lr: give exactly one of"),
]


@pytest.mark.parametrize(("raw", "expected"), BAD_SPECS, ids=[e[:40] for _, e in BAD_SPECS])
def test_bad_spec_names_field_and_value(raw, expected):
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert any(line.startswith(expected) for line in info.value.errors), info.value.errors


def test_good_spec_resolves_defaults():
    spec = parse_spec(GOOD)
    assert spec.train.epochs == 2 and spec.train.batch_size == 128
    assert spec.metrics == ("accuracy", "f1_macro")
    assert spec.register.alias == "champion"
    assert spec.storage == ".mlrt"


def test_every_error_is_reported_at_once():
    raw = _with(train__workers=0, train__lr=0, model={"kind": "torch_mlp", "hiden": [1]})
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert len(info.value.errors) == 3


def test_spec_hash_changes_with_content_only():
    a, b = parse_spec(GOOD), parse_spec(json.loads(json.dumps(GOOD)))
    assert a.spec_hash() == b.spec_hash()
    assert parse_spec(_with(train__epochs=3)).spec_hash() != a.spec_hash()


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    return path


def test_overrides_parse_yaml_values(spec_file):
    spec = load_spec(spec_file, ["train.epochs=5", "model.hidden=[16, 8]", "train.use_gpu=true"])
    assert spec.train.epochs == 5
    assert spec.model.hidden == [16, 8]
    assert spec.train.use_gpu is True


def test_override_errors_name_the_key(spec_file):
    with pytest.raises(SpecError, match=r"--set 'train.epochs': expected KEY=VALUE"):
        load_spec(spec_file, ["train.epochs"])
    with pytest.raises(SpecError, match=r"--set name.first: name is not a section"):
        load_spec(spec_file, ["name.first=1"])
    with pytest.raises(SpecError, match=r"train.workers: must be >= 1, got -2"):
        load_spec(spec_file, ["train.workers=-2"])


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntask: classification\ndata: {source: [unclosed\n")
    with pytest.raises(SpecError, match=r"YAML syntax error at line \d+, column \d+"):
        load_spec(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(SpecError, match="cannot read the spec file"):
        load_spec(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="must be a YAML mapping, got list"):
        load_spec(path)


def test_shipped_specs_are_valid():
    from pathlib import Path

    jobs = sorted(Path(__file__).parents[3].joinpath("jobs").glob("*.yaml"))
    assert jobs, "no shipped job specs found"
    for job in jobs:
        load_spec(job)


def test_json_schema_describes_sections():
    schema = json_schema()
    assert {"name", "task", "data", "model", "train"} <= set(schema["properties"])
    assert "name" in schema["required"]


def test_the_recorded_spec_keeps_env_var_names_but_not_their_values():
    from runtime.pipeline.record import recorded_spec

    spec = parse_spec({**GOOD, "runtime": {"env_vars": {"AWS_SECRET_ACCESS_KEY": "hunter2"}}})
    recorded = recorded_spec(spec)
    assert recorded["runtime"]["env_vars"] == {"AWS_SECRET_ACCESS_KEY": "***"}
    assert "hunter2" not in yaml.safe_dump(recorded)
    assert recorded["train"] == spec.model_dump(mode="json")["train"]


GOVERNANCE_BAD = [
    (_with(evaluate__slices=["sex", "sex"]), "evaluate.slices: columns listed twice: ['sex']"),
    (_with(evaluate__min_slice_rows=0), "evaluate.min_slice_rows: must be >= 1, got 0"),
    (_with(evaluate__gate={"metric": "accuracy", "max_slice_gap": -0.1}),
     "evaluate.gate.max_slice_gap: must be >= 0, got -0.1"),
    (_with(evaluate__gate={"metric": "accuracy", "max_slice_gap": 0.05}),
     "evaluate.gate.max_slice_gap: needs evaluate.slices"),
    (_with(register={"approval": "sometimes"}),
     "register.approval: must be 'auto' or 'manual', got 'sometimes'"),
    (_with(register={"alias": "candidate"}), "register.alias: 'candidate' is the alias of "
                                             "versions waiting for approval"),
    (_with(card={"owner": "me", "intended": "x"}), "card.intended: unknown field 'intended'"),
]


@pytest.mark.parametrize("raw, message", GOVERNANCE_BAD)
def test_governance_fields_are_validated_naming_the_field(raw, message):
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert any(message in e for e in info.value.errors), info.value.errors


def test_governance_fields_parse_and_leave_old_hashes_alone():
    spec = parse_spec(_with(evaluate__slices=["sex"], evaluate__min_slice_rows=5,
                            evaluate__gate={"metric": "accuracy", "max_slice_gap": 0.05},
                            register={"approval": "manual"},
                            card={"owner": "risk team", "description": "<b>digits</b>"}))
    assert spec.evaluate.slices == ["sex"] and spec.register.approval == "manual"
    assert spec.card.owner == "risk team"
    plain = parse_spec(GOOD)
    # set to their defaults, the new fields hash as if absent (older runs keep their hash)
    same = parse_spec(_with(evaluate__slices=[], register={"approval": "auto"},
                            card={"owner": "someone"}))
    assert same.spec_hash() == plain.spec_hash()
    assert spec.spec_hash() != plain.spec_hash()
