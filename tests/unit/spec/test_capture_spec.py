"""`serve.capture`: presence turns it on, `--set` works, bad names fail naming the dotted path."""

from __future__ import annotations

import pytest
import yaml

from runtime.spec import SpecError, load_spec, parse_spec

GOOD = {"name": "cap", "task": "classification",
        "data": {"source": {"kind": "sklearn", "name": "digits"}},
        "model": {"kind": "torch_mlp", "hidden": [8]}}


def _with(**sections) -> dict:
    return {**GOOD, **sections}


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    return path


def test_absent_is_off_and_set_turns_it_on_with_defaults(spec_file):
    assert load_spec(spec_file).serve.capture is None
    capture = load_spec(spec_file, ["serve.capture={sample: 0.5}"]).serve.capture
    assert capture.sample == 0.5 and capture.flush_s == 5 and capture.queue_rows == 10_000
    assert capture.exclude == [] and capture.hash == [] and capture.salt_env == "MLRT_CAPTURE_SALT"
    assert load_spec(spec_file, ["serve.capture={}"]).serve.capture.sample == 1.0


@pytest.mark.parametrize(("capture", "message"), [
    ({"sample": 0}, "serve.capture.sample: must be > 0, got 0"),
    ({"sample": 1.5}, "serve.capture.sample: must be <= 1, got 1.5"),
    ({"flush_s": 0}, "serve.capture.flush_s: must be > 0"),
    ({"queue_rows": 0}, "serve.capture.queue_rows: must be >= 1"),
    ({"queue_rows": 10, "batch_rows": 20}, "batch_rows (20) must be <= queue_rows (10)"),
    ({"exclude": ["a", "time"]}, "serve.capture.exclude[1]: 'time' is a column every captured"),
    ({"hash": ["request_id"]}, "serve.capture.hash[0]: 'request_id' is a column"),
    ({"hash": ["a"], "exclude": ["a"]}, "serve.capture.hash: ['a'] also excluded"),
    ({"smaple": 1}, "serve.capture.smaple: unknown field 'smaple'; did you mean 'sample'?"),
])
def test_bad_capture_names_the_field(capture, message):
    with pytest.raises(SpecError) as info:
        parse_spec(_with(serve={"capture": capture}))
    assert any(message in e for e in info.value.errors), info.value.errors


def test_names_are_checked_against_a_feature_list():
    data = {**GOOD["data"], "source": {"kind": "csv", "path": "x.csv"}, "target": "y",
            "features": ["age", "email"]}
    ok = parse_spec(_with(data=data, serve={"capture": {"hash": ["email"]}}))
    assert ok.serve.capture.hash == ["email"]
    with pytest.raises(SpecError, match=r"serve.capture.exclude\[0\]: 'agee' is not a feature"):
        parse_spec(_with(data=data, serve={"capture": {"exclude": ["agee"]}}))
    clash = {**data, "features": ["age", "version"]}
    with pytest.raises(SpecError, match=r"data.features: \['version'\] clash"):
        parse_spec(_with(data=clash, serve={"capture": {}}))
    assert parse_spec(_with(data=clash)).serve.capture is None  # fine while capture is off
