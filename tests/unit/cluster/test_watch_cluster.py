"""The watcher on a cluster, without one: the CronJob `mlrt render --target watch` writes
(checked against the batch/v1 CronJob schema), the interval -> cron mapping and its refusals,
the checks both cluster paths make, and the Ray job entrypoint of `mlrt submit --watch`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import pytest

from runtime.cluster.kuberay import interval_cron, render_rayservice, render_watch_cronjob
from runtime.cluster.preflight import watch_problems
from runtime.cluster.submit import entrypoint
from runtime.errors import InputError
from runtime.spec import load_spec

ROOT = Path(__file__).parents[3]
SCHEMA = json.loads((ROOT / "tests" / "data" / "cronjob_schema.json").read_text())
# What a platform team runs: storage every pod reaches, captured traffic, a tracking server.
ON_K8S = ["storage=s3://bucket/mlrt", "serve.capture={}",
          "runtime.env_vars={MLFLOW_TRACKING_URI: 'http://mlflow:5000'}"]


def spec(*overrides: str):
    return load_spec(ROOT / "jobs" / "digits.yaml", overrides)


def validate(manifest: dict) -> None:
    jsonschema.validate(manifest, {**SCHEMA, "$ref": "#/$defs/CronJob"})


def container(manifest: dict) -> dict:
    (only,) = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return only


def test_cronjob_fits_the_schema_and_runs_one_cycle_against_the_rayservice_cluster():
    job = spec(*ON_K8S, "monitor.interval=15m", "cluster.image=registry.example.com/mlrt:1")
    cron = render_watch_cronjob(job, "jobs/digits.yaml", ["train.epochs=3"])
    validate(cron)
    assert cron["spec"]["schedule"] == "*/15 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["startingDeadlineSeconds"] == 900
    assert cron["metadata"]["name"] == "digits-mlp-watch"
    watch = container(cron)
    # the RayService rendered for the same spec is named like this: its head service answers
    assert render_rayservice(job, {"applications": []})["metadata"]["name"] == "digits-mlp"
    assert watch["command"] == ["mlrt", "watch", "jobs/digits.yaml", "--set", "train.epochs=3",
                                "--once", "--address", "ray://digits-mlp-head-svc:10001"]
    assert watch["image"] == "registry.example.com/mlrt:1"
    env = {e["name"]: e for e in watch["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    assert env["RAY_AUTH_MODE"]["value"] == "token"  # token authentication stays on
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "digits-mlp-ray-token", "key": "token"}


def test_schema_catches_what_kubectl_would_refuse():
    """The check can fail: a wrong policy, a pod that restarts forever, a stray field."""
    good = render_watch_cronjob(spec(*ON_K8S), "jobs/digits.yaml")
    for path, value in ((("spec", "concurrencyPolicy"), "Sometimes"),
                        (("spec", "jobTemplate", "spec", "template", "spec", "restartPolicy"),
                         "Always"),
                        (("spec", "scheduel"), "* * * * *")):
        bad = json.loads(json.dumps(good))
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)


def test_long_spec_names_fit_the_cronjob_name_limit():
    cron = render_watch_cronjob(spec(*ON_K8S, "name=" + "a-very-long-model-name" * 3),
                                "jobs/digits.yaml")
    validate(cron)
    assert len(cron["metadata"]["name"]) <= 52 and cron["metadata"]["name"].endswith("-watch")


@pytest.mark.parametrize(("interval", "cron"), [
    ("60s", "* * * * *"), ("5m", "*/5 * * * *"), ("30m", "*/30 * * * *"),
    ("60m", "0 * * * *"), ("1h", "0 * * * *"), ("6h", "0 */6 * * *"), ("24h", "0 0 * * *"),
    ("1d", "0 0 * * *"), ("7d", "0 0 * * 0"), ("120s", "*/2 * * * *")])
def test_intervals_that_cron_repeats_exactly(interval, cron):
    assert interval_cron(interval) == cron


@pytest.mark.parametrize(("interval", "nearest"), [
    ("7m", "6m or 10m"), ("90s", "1m or 2m"), ("45s", "1m"), ("90m", "1h or 2h"),
    ("5h", "4h or 6h"), ("2d", "1d or 7d"), ("30d", "7d")])
def test_intervals_cron_cannot_repeat_are_refused_with_the_nearest_that_work(interval, nearest):
    with pytest.raises(InputError) as refused:
        interval_cron(interval)
    assert str(refused.value).startswith(f"monitor.interval: {interval} cannot be a cron")
    assert str(refused.value).endswith(f"e.g. {nearest}")


def test_a_spec_with_nothing_to_watch_or_pod_local_storage_is_refused():
    (nothing,) = watch_problems(spec("storage=s3://b/m"), pods=True)
    assert nothing.startswith("serve.capture: the watcher judges captured traffic")
    assert watch_problems(spec("storage=s3://b/m", "monitor.triggers.schedule='0 3 * * 0'"),
                          pods=True) == []  # a schedule alone can retrain
    (captures,) = watch_problems(spec("storage=s3://b/m", "monitor.triggers.schedule='0 3 * * 0'",
                                      "monitor.retrain.data=source+captures"), pods=True)
    assert captures.startswith("monitor.retrain.data: source+captures needs serve.capture")
    (local,) = watch_problems(spec("serve.capture={}", "storage=/data/mlrt"), pods=True)
    assert local.startswith("storage: '/data/mlrt' is a local path and each CronJob run is a "
                            "new pod")
    assert watch_problems(spec("serve.capture={}", "storage=/data/mlrt",
                               "runtime.shared_storage=true"), pods=True) == []


def test_a_ray_job_watcher_refuses_relative_storage_only():
    (relative,) = watch_problems(spec("serve.capture={}"), pods=False)
    assert relative.startswith("storage: '.mlrt' is relative")
    # an absolute path is the node's disk (shared or single-node: preflight checks node count)
    assert watch_problems(spec("serve.capture={}", "storage=/data/mlrt"), pods=False) == []


def test_submit_watch_runs_the_watcher_without_once():
    command = entrypoint("jobs/digits.yaml", ["monitor.interval=1m"], python="/v/bin/python",
                         command="watch")
    assert shlex.split(command) == ["/v/bin/python", "-m", "runtime", "watch", "jobs/digits.yaml",
                                    "--set", "monitor.interval=1m"]
