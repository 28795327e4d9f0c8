"""Drift and label coverage as Prometheus gauges, exported by each replica.

`mlrt monitor` writes its latest report to {storage}/monitoring/{model}/latest.json; a daemon
thread in each replica reads it every MLRT_MONITOR_GAUGE_S seconds (default 30) and sets

    mlrt_drift_score{model, version, feature}     the feature's drift score
    mlrt_drift_threshold{model, version, feature} the threshold it is judged against
    mlrt_drift_detected{model, version}           1 when the report found drift, else 0
    mlrt_label_coverage{model, version}           labeled share of the window's rows
    mlrt_monitor_report_timestamp_seconds{model}  when the window ended (stale reports)

through ray.serve.metrics, which Ray's metrics agent on every node serves in Prometheus format
at the node's metrics export port (`ray start --metrics-export-port`, `ray.nodes()` ->
MetricsExportPort; the head also writes /tmp/ray/prom_metrics_service_discovery.json).
cluster/prometheus/ holds the alert rules and a Grafana dashboard over them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime

logger = logging.getLogger("mlrt.serve")
INTERVAL_ENV = "MLRT_MONITOR_GAUGE_S"


def start(model_uri: str, storage: str | None) -> threading.Thread | None:
    """The replica's one hook (ModelServer.__init__); None when the app has no storage."""
    if not storage:
        return None
    from runtime.registry.uris import parse_model_uri

    gauges = DriftGauges(parse_model_uri(model_uri)[0], storage)
    thread = threading.Thread(target=gauges.run, name="mlrt-drift-gauges", daemon=True)
    thread.start()
    return thread


class DriftGauges:
    def __init__(self, model: str, storage: str):
        from ray.serve import metrics

        self.model, self.path = model, f"{storage.rstrip('/')}/monitoring/{model}/latest.json"
        self.interval = float(os.environ.get(INTERVAL_ENV, "30"))
        feature = ("model", "version", "feature")
        self.score = metrics.Gauge("mlrt_drift_score", description="Drift score of a feature "
                                   "in the latest mlrt monitor window.", tag_keys=feature)
        self.threshold = metrics.Gauge("mlrt_drift_threshold", description="The score above "
                                       "which the feature counts as drifted.", tag_keys=feature)
        self.detected = metrics.Gauge("mlrt_drift_detected", description="1 when the latest "
                                      "window drifted.", tag_keys=("model", "version"))
        self.coverage = metrics.Gauge("mlrt_label_coverage", description="Labeled share of the "
                                      "latest window's rows.", tag_keys=("model", "version"))
        self.stamp = metrics.Gauge("mlrt_monitor_report_timestamp_seconds",
                                   description="End of the latest monitored window (unix s).",
                                   tag_keys=("model",))
        self._seen: float | None = None
        self._fs = None  # opened at the first refresh (s3:// may ask the network), then kept

    def run(self) -> None:
        """Daemon thread: ends with the replica's process."""
        while True:
            try:
                self.refresh()
            except Exception as e:  # noqa: BLE001 - a bad report must not stop serving
                logger.warning("drift gauges: %s could not be read: %s", self.path, e)
            time.sleep(self.interval)

    def refresh(self) -> None:
        if self._fs is None:
            from runtime.data.fs import open_uri

            self._fs = open_uri(self.path)
        fs, path = self._fs
        info = fs.get_file_info(path)
        if info.size is None or info.mtime_ns == self._seen:
            return  # no report yet, or the one already exported
        with fs.open_input_stream(path) as f:
            report = json.loads(f.read())
        self.set(report)
        self._seen = info.mtime_ns

    def set(self, report: dict) -> None:
        for version in report.get("versions", []):
            tags = {"model": self.model, "version": version["version"]}
            self.detected.set(float(bool(version["drift"]["detected"])), tags=tags)
            if version["quality"]["coverage"] is not None:
                self.coverage.set(version["quality"]["coverage"], tags=tags)
            for name, feature in version["drift"]["features"].items():
                if feature["score"] is not None:
                    self.score.set(feature["score"], tags={**tags, "feature": name})
                    self.threshold.set(feature["threshold"], tags={**tags, "feature": name})
        until = datetime.fromisoformat(report["window"]["until"])
        self.stamp.set(until.timestamp(), tags={"model": self.model})
