"""The monitoring report: merged window partials + each version's profiles -> the documented
JSON (the champion's numbers at the top level, every served version under `versions`).

    {"model", "version", "window": {"since", "until"}, "rows", "status", "message",
     "drift": {"detected", "drifted_features", "features": {name: {"method", "score",
               "threshold", "drifted", "status", "null_rate", ...}}},
     "prediction_drift": same shape for the `prediction` column, or null,
     "quality": {"labeled", "coverage", "metrics", "arms": {arm: {...}}},
     "latency": {"rows", "mean_ms", "p50_ms", "p99_ms"},
     "versions": [the same per version, the champion first], "unknown_rows"}
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

from runtime.monitoring.drift import score_drift
from runtime.monitoring.quality import (
    correct_share,
    empty_quality,
    latency_summary,
    merge_latency,
    merge_quality,
    quality_metrics,
)
from runtime.monitoring.settings import DriftSettings
from runtime.monitoring.window import merge_window

_EMPTY_LATENCY = {"n": 0, "sum": 0.0, "bins": {}}


def version_report(version: str, merged: dict | None, info: dict, task: str,
                   metrics: list[str], settings: DriftSettings, start: datetime, end: datetime,
                   buckets: int) -> dict:
    """One version's part of the report (`merged` None: no rows of it in the window)."""
    merged = merged or {"rows": 0, "drift": merge_window([]), "prediction": None, "arms": {},
                        "buckets": {}}
    prediction = None
    if info.get("prediction_profile") is not None:
        prediction = score_drift(merged["prediction"] or merge_window([]),
                                 info["prediction_profile"], settings)
    arms = {arm: _quality(group, task, metrics) for arm, group in merged["arms"].items()}
    overall = merge_quality([g["quality"] for g in merged["arms"].values()], task)
    quality = {**_quality({"rows": merged["rows"], "quality": overall}, task, metrics),
               "arms": arms}
    latency = merge_latency([g["latency"] for g in merged["arms"].values()] or [_EMPTY_LATENCY])
    step = (end - start) / buckets
    timeline = [{"start": (start + step * int(b)).isoformat(), "rows": g["rows"],
                 **{k: v for k, v in latency_summary(g["latency"]).items() if k != "rows"},
                 "quality": correct_share(g["quality"], task)}
                for b, g in merged["buckets"].items()]
    return {"version": version, "aliases": info.get("aliases", []), "rows": merged["rows"],
            "drift": score_drift(merged["drift"], info["profile"], settings),
            "prediction_drift": prediction, "quality": quality,
            "latency": latency_summary(latency), "timeline": timeline,
            "profile": _reference_view(info["profile"]),
            "window_counts": _window_view(merged["drift"])}


def _quality(group: dict, task: str, metrics: list[str]) -> dict:
    summary = group.get("quality") or empty_quality(task)
    rows = group["rows"]
    return {"rows": rows, "labeled": summary["n"],
            "coverage": round(summary["n"] / rows, 6) if rows else None,
            "metrics": quality_metrics(summary, task, metrics),
            "quality_metric": "accuracy" if task == "classification" else "mae"}


def _reference_view(profile: dict) -> dict:
    """What the HTML report plots of the reference (bins, frequencies), nothing else."""
    from runtime.monitoring.window import reference_bins, reference_categories

    out = {}
    for name, entry in profile["features"].items():
        if entry["type"] == "numeric":
            bins = reference_bins(entry)
            if bins is not None:
                out[name] = {"type": "numeric", "edges": bins[0].tolist(),
                             "counts": bins[1].tolist()}
        else:
            out[name] = {"type": "categorical", "counts": reference_categories(entry),
                         "total": entry.get("count", 0)}
    return out


def _window_view(summary: dict) -> dict:
    out = {name: {"counts": s["counts"]} for name, s in summary["numeric"].items()}
    out.update({name: {"counts": s["counts"], "other": s["other"]}
                for name, s in summary["categorical"].items()})
    return out


def full_report(model: str, champion: str, versions: list[dict], start: datetime,
                end: datetime, unknown_rows: int) -> dict:
    """The top level: the champion's report, and every version's under `versions`."""
    top = next(v for v in versions if v["version"] == champion)
    total = sum(v["rows"] for v in versions) + unknown_rows
    if total == 0:
        status, message = "empty", (f"no captured rows of {model} between {start.isoformat()} "
                                    f"and {end.isoformat()}: nothing to judge")
    elif top["drift"]["detected"]:
        status = "drift"
        message = f"drift in {', '.join(top['drift']['drifted_features'])}"
    else:
        status, message = "ok", "no drift"
    return {"model": model, "version": champion,
            "window": {"since": start.isoformat(), "until": end.isoformat()},
            "rows": top["rows"], "status": status, "message": message,
            "drift": top["drift"], "prediction_drift": top["prediction_drift"],
            "quality": top["quality"], "latency": top["latency"],
            "versions": versions, "unknown_rows": unknown_rows, "total_rows": total}


def public_json(report: dict) -> dict:
    """The report without the plot data (what --json prints and latest.json holds)."""
    def strip(v: dict) -> dict:
        return {k: val for k, val in v.items() if k not in ("profile", "window_counts")}

    return {**report, "versions": [strip(v) for v in report["versions"]]}


def write_latest(storage: str, report: dict) -> str:
    """{storage}/monitoring/{model}/latest.json, atomically (the replicas' gauges read it)."""
    import pyarrow.fs as pafs

    from runtime.data.fs import open_uri

    fs, base = open_uri(f"{storage.rstrip('/')}/monitoring/{report['model']}")
    fs.create_dir(base, recursive=True)
    data = json.dumps(public_json(report), indent=1, sort_keys=True).encode()
    target = f"{base}/latest.json"
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{base}/.latest.json.tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(data)
        Path(tmp).replace(target)
    else:  # one PUT on an object store is atomic
        with fs.open_output_stream(target) as f:
            f.write(data)
    return target


def bucket_count(start: datetime, end: datetime) -> int:
    """Time buckets of the plots: one a minute for short windows, at most 48."""
    return int(max(1, min(48, (end - start) // timedelta(minutes=1))))
