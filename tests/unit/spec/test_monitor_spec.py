"""The `monitor:` section: defaults, durations, cron, triggers and rollout checked before Ray
starts, each error naming its dotted field."""

from __future__ import annotations

import pytest
import yaml
from factories import spec_data

from runtime.spec import SpecError, load_spec, parse_spec


def _errors(tmp_path, monitor: dict, **sections) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(spec_data(tmp_path, monitor=monitor, **sections))
    return info.value.errors


def test_defaults_and_the_issue_example(tmp_path):
    spec = parse_spec(spec_data(tmp_path))
    assert spec.monitor.interval_s == 600
    assert spec.monitor.triggers.drift.min_windows == 3
    assert spec.monitor.retrain.cooldown_s == 6 * 3600
    assert spec.canary_weight == 0.0  # no serve.canary: promote on the gate
    example = {"interval": "10m",
               "triggers": {"drift": {"min_windows": 3},
                            "quality": {"metric": "accuracy", "below": 0.9, "min_labels": 200},
                            "schedule": "0 3 * * 0"},
               "retrain": {"data": "source+captures", "cooldown": "6h", "max_per_day": 2},
               "rollout": {"canary_weight": 0.1, "min_labeled": 200, "max_quality_drop": 0.0},
               "drift": {"threshold": 0.2}}
    spec = parse_spec(spec_data(tmp_path, monitor=example, serve={"canary": {"weight": 0.1}}))
    assert spec.canary_weight == 0.1
    assert spec.monitor.drift.threshold == 0.2  # monitor.drift: the monitor's own settings


def test_monitor_does_not_change_the_spec_hash(tmp_path):
    plain = parse_spec(spec_data(tmp_path))
    watched = parse_spec(spec_data(tmp_path, monitor={"interval": "1h"}))
    assert plain.spec_hash() == watched.spec_hash()


@pytest.mark.parametrize(("monitor", "expected"), [
    ({"interval": "10 minutes"}, "monitor.interval: expected a duration like 30s, 10m"),
    ({"interval": "5s"}, "monitor.interval: must be at least 10s"),
    ({"retrain": {"cooldown": "6 h"}}, "monitor.retrain.cooldown: expected a duration"),
    ({"retrain": {"max_per_day": 0}}, "monitor.retrain.max_per_day: must be >= 1"),
    ({"retrain": {"data": "captures"}}, "monitor.retrain.data: must be 'source' or "
                                        "'source+captures'"),
    ({"triggers": {"schedule": "0 3 * *"}}, "monitor.triggers.schedule: a cron expression has "
                                            "5 fields"),
    ({"triggers": {"schedule": "61 * * * *"}}, "monitor.triggers.schedule: minute: 61 is "
                                               "outside 0-59"),
    ({"triggers": {"schedule": "0 0 30 2 *"}}, "monitor.triggers.schedule: the cron expression "
                                               "never fires"),
    ({"triggers": {"drift": {"min_windows": 0}}}, "monitor.triggers.drift.min_windows: must "
                                                  "be >= 1"),
    ({"triggers": {"quality": {"metric": "rmse", "above": 1}}},
     "monitor.triggers.quality.metric: 'rmse' is not a classification metric"),
    ({"triggers": {"quality": {"metric": "accuracy"}}},
     "monitor.triggers.quality: set below: the value of accuracy"),
    ({"triggers": {"quality": {"metric": "log_loss", "below": 0.5}}},
     "monitor.triggers.quality.below: log_loss is an error (smaller is better): use above"),
    ({"rollout": {"canary_weight": 0.2}}, "monitor.rollout.canary_weight: 0.2 needs the serving "
                                          "app to split traffic: add serve.canary"),
    ({"rollout": {"canary_weight": 1.0}}, "monitor.rollout.canary_weight: must be < 1"),
    ({"rollout": {"min_labeled": 0}}, "monitor.rollout.min_labeled: must be >= 1"),
    ({"triggers": {"sched": "0 3 * * *"}}, "monitor.triggers.sched: unknown field 'sched'; "
                                           "did you mean 'schedule'?"),
])
def test_bad_values_name_the_field(tmp_path, monitor, expected):
    errors = _errors(tmp_path, monitor)
    assert any(e.startswith(expected) for e in errors), errors


def test_canary_weight_must_match_serve_canary(tmp_path):
    errors = _errors(tmp_path, {"rollout": {"canary_weight": 0.2}},
                     serve={"canary": {"weight": 0.1}})
    assert errors[0].startswith("monitor.rollout.canary_weight: 0.2 differs from "
                                "serve.canary.weight (0.1)")


def test_regression_quality_trigger_uses_above(tmp_path):
    raw = spec_data(tmp_path, task="regression",
                    data={"source": {"kind": "sklearn", "name": "diabetes"},
                          "split": {"test": 0.2, "validation": 0.1, "seed": 0}},
                    monitor={"triggers": {"quality": {"metric": "rmse", "above": 60}}})
    assert parse_spec(raw).monitor.triggers.quality.above == 60


def test_cli_validate_exits_2_before_ray(tmp_path):
    from typer.testing import CliRunner

    from runtime.cli.main import build_app

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_data(tmp_path, monitor={"interval": "soon"})))
    with pytest.raises(SpecError):
        load_spec(path)
    result = CliRunner().invoke(build_app(), ["watch", str(path), "--once"])
    assert isinstance(result.exception, SpecError)
    assert "monitor.interval" in str(result.exception)
