"""Integration: `mlrt monitor`'s pass on the session's Ray over capture files written to the
layout contract (tests/capture_factory.py) for a model trained and registered by the real
pipeline: a window from the training distribution is not flagged, a window with two shifted
features names exactly those two; labels give quality and coverage; the HTML report renders
in headless Chromium; the run is in MLflow, linked to the version."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from capture_factory import write_captures, write_labels
from factories import BREAST_CANCER, LOGISTIC, spec_data
from sklearn.datasets import load_breast_cancer

from runtime.inference.predictor import Predictor
from runtime.monitoring.monitor import run_monitor, target_for
from runtime.pipeline.driver import run_job
from runtime.registry import tracking
from runtime.registry.model_dir import PREDICTION_PROFILE_FILE, fetch_model
from runtime.spec import parse_spec

pytestmark = pytest.mark.integration
NAME = "it-monitor"
SHIFTED = ("mean radius", "worst texture")
NOW = datetime.now(UTC).replace(microsecond=0)


def _window(rng, predictor, n, shift=()):
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.sample(n, replace=True, random_state=int(rng.integers(1 << 30)))
    frame = frame.reset_index(drop=True)
    target = frame.pop("target")
    for name in shift:  # +1 training sd: a change worth acting on
        frame[name] = frame[name] + data.frame[name].std()
    labels, proba = predictor.predict(frame)
    return frame, target, labels, proba


@pytest.fixture(scope="module")
def store(ray_session, tmp_path_factory) -> dict:
    storage = str(tmp_path_factory.mktemp("monitor") / "store")
    raw = spec_data(storage, NAME, data=BREAST_CANCER, model={**LOGISTIC, "params": {
        "max_iter": 500}}, monitor={"drift": {"min_rows": 100}})
    spec_path = Path(storage).parent / "spec.yaml"
    import yaml

    spec_path.write_text(yaml.safe_dump(raw))
    version = run_job(parse_spec(raw), echo=lambda _: None).version
    files = fetch_model(f"models:/{NAME}/{version}")
    predictor = Predictor.from_files(files.files)
    rng = np.random.default_rng(5)
    same = _window(rng, predictor, 1500)
    ids = write_captures(storage, NAME, version, same[0], same[2], same[3],
                         start=NOW - timedelta(minutes=50), spacing=timedelta(seconds=0.9))
    write_labels(storage, NAME, ids[:600], [str(v) for v in same[1][:600]])
    shifted = _window(rng, predictor, 1500, SHIFTED)
    write_captures(storage, NAME, version, shifted[0], shifted[2], shifted[3],
                   start=NOW - timedelta(minutes=25), spacing=timedelta(seconds=0.5))
    return {"storage": storage, "version": version, "spec": str(spec_path), "files": files,
            "accuracy": float(np.mean(np.asarray(same[2][:600]).astype(str)
                                      == same[1][:600].astype(str)))}


def _monitor(store, since, until, **kwargs) -> dict:
    return run_monitor(target_for(store["spec"]), since.isoformat(), until.isoformat(),
                       echo=lambda _: None, **kwargs)


def test_registration_stores_the_prediction_profile(store):
    profile = json.loads(store["files"].files[PREDICTION_PROFILE_FILE])
    assert set(profile["features"]["prediction"]["frequencies"]) == {"0", "1"}


def test_a_window_from_the_training_distribution_is_not_flagged(store, tmp_path):
    report = _monitor(store, NOW - timedelta(minutes=55), NOW - timedelta(minutes=26),
                      html=str(tmp_path / "same.html"))
    assert report["rows"] == 1500 and report["status"] == "ok"
    assert report["drift"]["detected"] is False, report["drift"]["drifted_features"]
    assert report["prediction_drift"]["detected"] is False
    statuses = {f["status"] for f in report["drift"]["features"].values()}
    assert statuses == {"ok"} and len(report["drift"]["features"]) == 30
    quality = report["quality"]
    assert quality["labeled"] == 600 and quality["coverage"] == pytest.approx(0.4)
    assert quality["metrics"]["accuracy"] == pytest.approx(store["accuracy"])
    assert quality["arms"]["stable"]["labeled"] == 600
    assert report["latency"]["p50_ms"] == pytest.approx(2.0, rel=0.07)
    latest = json.loads(Path(report["latest"]).read_text())
    assert latest["version"] == store["version"] and latest["drift"]["detected"] is False


def test_shifted_features_are_named_exactly(store, tmp_path):
    html = tmp_path / "shifted.html"
    report = _monitor(store, NOW - timedelta(minutes=26), NOW, html=str(html))
    assert report["rows"] == 1500 and report["status"] == "drift"
    assert sorted(report["drift"]["drifted_features"]) == sorted(SHIFTED)
    assert report["quality"]["labeled"] == 0 and report["quality"]["metrics"] == {}
    run = tracking.client().get_run(report["mlflow_run"])
    assert run.data.tags["mlrt.model_version"] == store["version"]
    assert run.data.metrics["drift_detected"] == 1.0
    version = tracking.client().get_model_version(NAME, store["version"])
    assert version.tags["mlrt.monitor.last_run"] == report["mlflow_run"]
    artifacts = {a.path for a in tracking.client().list_artifacts(report["mlflow_run"],
                                                                  "monitoring")}
    assert {"monitoring/report.json", "monitoring/shifted.html",
            "monitoring/drift_scores.svg"} <= artifacts
    page = html.read_text()
    assert "<svg" in page and "<script" not in page  # self-contained: nothing to fetch
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)
    for name in SHIFTED:
        assert f"{name}: drift" in page  # the feature's plot title names its verdict


def test_an_empty_window_says_so(store):
    report = _monitor(store, NOW - timedelta(days=3), NOW - timedelta(days=2))
    assert report["status"] == "empty" and report["rows"] == 0
    assert "no captured rows" in report["message"]
    assert {f["status"] for f in report["drift"]["features"].values()} == {"not enough rows"}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install "
                                             "chromium) to render the HTML report")
def test_the_html_report_renders_in_headless_chromium(store, tmp_path):
    from PIL import Image

    html = tmp_path / "report.html"
    _monitor(store, NOW - timedelta(minutes=26), NOW, html=str(html))
    shot = tmp_path / "shot.png"
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,2400",
         html.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), result.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert image.shape[0] >= 1000 and image.shape[1] >= 1000
    # not blank: the plots' orange/blue bars and text make many distinct colours
    colours = len(np.unique(image.reshape(-1, 3), axis=0))
    assert colours > 50, f"the screenshot looks blank ({colours} colours)"
    orange = np.all(np.abs(image - [0xE0, 0x7B, 0x39]) < 12, axis=2).sum()
    assert orange > 500, "no window histogram bars visible"
