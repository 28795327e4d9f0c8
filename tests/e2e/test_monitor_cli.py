"""End to end: `mlrt monitor` as a user runs it on a model `mlrt run` registered, over a
captured window (capture files written to the layout contract by tests/capture_factory.py),
then the replica's drift gauges scraped by a real Prometheus (Debian `prometheus`, on a free
127.0.0.1 port, stopped by pid) that fires the shipped drift rule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml
from capture_factory import write_captures
from sklearn.datasets import load_breast_cancer
from user import ROOT, mlrt, user_dir  # tests/e2e/user.py

pytestmark = pytest.mark.e2e
NAME = "breast-cancer-hgb"  # jobs/breast_cancer.yaml's name
LOGREG = ["--set", "model.estimator=sklearn.linear_model.LogisticRegression",
          "--set", "model.params={max_iter: 500}"]
SHIFTED = ("mean texture", "worst area")
NOW = datetime.now(UTC).replace(microsecond=0)


def _rows(seed: int, n: int, shift=()):
    data = load_breast_cancer(as_frame=True).frame
    frame = data.sample(n, replace=True, random_state=seed).reset_index(drop=True)
    frame.pop("target")
    for name in shift:
        frame[name] = frame[name] + data[name].std()
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    work = user_dir(tmp_path_factory, "monitor-user")
    spec = yaml.safe_load((work / "jobs/breast_cancer.yaml").read_text())
    result = mlrt("run", "jobs/breast_cancer.yaml", *LOGREG, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    storage = work / spec.get("storage", ".mlrt")
    name = spec["name"]
    # predictions as text, as a replica captures them; the model's own are not needed here
    same, shifted = _rows(1, 1200), _rows(2, 1200, SHIFTED)
    write_captures(storage, name, "1", same, np.where(same["mean radius"] > 14, "0", "1"),
                   start=NOW - timedelta(minutes=50), spacing=timedelta(seconds=1))
    write_captures(storage, name, "1", shifted, np.where(shifted["mean radius"] > 14, "0", "1"),
                   start=NOW - timedelta(minutes=20), spacing=timedelta(seconds=0.5))
    return {"work": work, "storage": storage, "name": name}


def _monitor(trained, since, until, *extra):
    return mlrt("monitor", "jobs/breast_cancer.yaml", "--since", since.isoformat(),
                "--until", until.isoformat(), "--json", "--fail-on-drift", *extra,
                cwd=trained["work"])


def test_same_distribution_exits_0_with_the_documented_json(trained):
    result = _monitor(trained, NOW - timedelta(minutes=55), NOW - timedelta(minutes=25))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"model", "version", "window", "rows", "drift", "prediction_drift",
            "quality"} <= set(report)
    assert report["model"] == trained["name"] and report["version"] == "1"
    assert report["rows"] == 1200 and report["drift"]["detected"] is False
    feature = next(iter(report["drift"]["features"].values()))
    assert {"method", "score", "threshold", "drifted"} <= set(feature)
    assert {"labeled", "coverage", "metrics"} <= set(report["quality"])
    assert "no drift" in result.stdout  # the terminal table's headline


def test_shifted_window_fails_on_drift_naming_the_features(trained):
    result = _monitor(trained, NOW - timedelta(minutes=21), NOW, "--report", "drift.html")
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(report["drift"]["drifted_features"]) == sorted(SHIFTED)
    assert (trained["work"] / "drift.html").stat().st_size > 10_000
    latest = trained["storage"] / "monitoring" / trained["name"] / "latest.json"
    assert json.loads(latest.read_text())["drift"]["detected"] is True


def test_an_empty_window_says_so_and_exits_0(trained):
    result = _monitor(trained, NOW - timedelta(days=5), NOW - timedelta(days=4))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no captured rows" in result.stdout


PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus (apt-get install "
                                               "prometheus)")
def test_prometheus_scraping_the_app_fires_the_drift_rule(trained, ray_session, tmp_path):
    """Runs after the shifted window's report: the replica exports its gauges, Prometheus
    scrapes the node's metrics agent and evaluates the shipped rules (`for:` shortened to
    0s here; the expression is the shipped one)."""
    import ray

    from runtime.spec import load_spec
    from serve_apps import config, local

    latest = trained["storage"] / "monitoring" / trained["name"] / "latest.json"
    if not latest.is_file() or not json.loads(latest.read_text())["drift"]["detected"]:
        _monitor(trained, NOW - timedelta(minutes=21), NOW)
    spec = load_spec(trained["work"] / "jobs/breast_cancer.yaml", [])
    target = config.Target(f"models:/{trained['name']}@champion", spec.serve,
                           str(trained["storage"]), "monitor-e2e")
    url = local.start(target, local.free_port())
    # the app's HAProxy paths and stats port stay out of this process's environment: a cluster
    # started later from it (tests/e2e/test_submit.py) gave both its nodes one stats port
    assert not [k for k in os.environ if k.startswith("RAY_SERVE_HAPROXY_")]
    node = next(n for n in ray.nodes() if n["Alive"])
    agent = f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
    rules = yaml.safe_load((ROOT / "cluster/prometheus/mlrt-alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": [agent]}]}]}))
    port = local.free_port()
    with open(tmp_path / "prometheus.log", "w") as log:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        alert = _wait_for_alert(port, "MlrtDriftDetected", 240)
        assert alert is not None, (f"no MlrtDriftDetected firing; app {url}, agent {agent}; "
                                   + (tmp_path / "prometheus.log").read_text()[-2000:])
        assert alert["labels"]["model"] == trained["name"] and alert["labels"]["version"] == "1"
        scores = _query(port, 'ray_mlrt_drift_score{feature="mean texture"}')
        assert scores and float(scores[0]["value"][1]) > 0.1
    finally:
        proc.terminate()
        proc.wait(30)
        from ray import serve

        # shutdown, not delete: Serve keeps its first HTTP port for the whole Ray session, and
        # the next module's apps (tests/integration/test_capture.py) ask for a port of their own
        serve.shutdown()


def _query(port: int, expr: str) -> list:
    from urllib.parse import quote

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={quote(expr)}",
                                timeout=10) as response:
        return json.loads(response.read())["data"]["result"]


def _wait_for_alert(port: int, name: str, timeout_s: float) -> dict | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts",
                                        timeout=10) as response:
                alerts = json.loads(response.read())["data"]["alerts"]
        except OSError:
            alerts = []  # not up yet
        for alert in alerts:
            if alert["labels"].get("alertname") == name and alert["state"] == "firing":
                return alert
        time.sleep(2)
    return None


