"""The watcher's one call into `mlrt monitor`, and how it reads the report.

`monitor_report(spec, since, until)` is the only place the watcher runs the monitor; it returns
the documented JSON report (README: Monitoring). The readers below are the only code that knows
the report's shape:

    {"model", "version", "window", "rows", "status",
     "drift": {"detected", "features": {name: {"method", "score", "threshold", "drifted"}}},
     "prediction_drift", "quality": {"labeled", "coverage", "metrics", "arms"},
     "versions": [{"version", "rows", "drift", "quality": {...}}, ...], "mlflow_run"}
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from runtime.spec import JobSpec


@dataclass(frozen=True)
class Quality:
    labeled: int
    metrics: dict[str, float]


def monitor_report(spec: JobSpec, since: datetime, until: datetime,
                   address: str | None = None, echo=print) -> dict:
    """Run the monitor on the window [since, until) of the spec's served model."""
    from runtime.monitoring.monitor import MonitorTarget, run_monitor

    target = MonitorTarget(spec.name, spec.storage, spec.register.alias, None,
                           spec.monitor.drift, tuple(spec.evaluate.metrics or ()))
    return run_monitor(target, since=since.isoformat(), until=until.isoformat(),
                       address=address, echo=echo)


def evidence_run(report: dict | None) -> str | None:
    """The MLflow run of the monitoring that a decision was based on."""
    return (report or {}).get("mlflow_run")


def drift_verdict(report: dict | None) -> bool | None:
    """True drift, False none, None no verdict (no report, an empty window, too few rows)."""
    if not report or not report.get("rows") or report.get("status") == "empty":
        return None
    drift = report.get("drift") or {}
    features = drift.get("features") or {}
    if drift.get("detected"):
        return True
    scored = [f for f in features.values() if f.get("score") is not None]
    return False if scored else None


def _quality(entry: dict | None) -> Quality | None:
    if not entry:
        return None
    return Quality(int(entry.get("labeled") or 0), dict(entry.get("metrics") or {}))


def champion_quality(report: dict | None) -> Quality | None:
    return _quality((report or {}).get("quality"))


def version_quality(report: dict | None, version: str) -> Quality | None:
    """One served version's live quality (its labeled requests in the window)."""
    for entry in (report or {}).get("versions") or ():
        if str(entry.get("version")) == str(version):
            return _quality(entry.get("quality"))
    if report and str(report.get("version")) == str(version):
        return champion_quality(report)
    return None
