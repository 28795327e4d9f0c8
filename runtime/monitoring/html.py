"""The `--report FILE.html` page: one self-contained file (inline SVG from matplotlib, no
script, no network) with the verdicts, the reference-vs-window histogram of every feature, the
drift scores against their thresholds, and quality and latency over the window.

    render_html(report)   # report: runtime.monitoring.report.full_report
    figures(report)       # {name: svg}: the same plots, logged to the MLflow run
"""

from __future__ import annotations

import html
import io
import re

import numpy as np

_MAX_FEATURE_PLOTS = 64  # a wide model's page stays readable; the table lists every feature
_CSS = """body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.drift{background:#fdd}
.ok{background:#dfd}.grid{display:flex;flex-wrap:wrap;gap:8px}.grid svg{width:320px;height:auto}
"""


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display; the backend is the process's, set before pyplot
    import matplotlib.pyplot as plt

    return plt


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    _plt().close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)  # date, creator
    return text[text.index("<svg"):]  # inline: no XML prolog inside HTML


def _shares(counts) -> np.ndarray:
    values = np.asarray(counts, np.float64)
    return values / values.sum() if values.sum() else values


def feature_figure(name: str, reference: dict, window: dict | None, verdict: dict) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    if reference["type"] == "numeric":
        labels = [f"<{reference['edges'][0]:.3g}"] + [f"{e:.3g}" for e in reference["edges"]]
        ref = _shares(reference["counts"])
        win = _shares(window["counts"]) if window else np.zeros_like(ref)
    else:
        labels = [*reference["counts"], "other"]
        total = reference["total"] or 1
        ref = np.array([*reference["counts"].values(),
                        max(total - sum(reference["counts"].values()), 0)]) / total
        win_counts = [*(window["counts"].get(k, 0) for k in reference["counts"]),
                      window["other"]] if window else [0] * len(labels)
        win = _shares(win_counts)
    x = np.arange(len(ref))
    ax.bar(x - 0.2, ref, 0.4, label="reference", color="#7a9cc6")
    ax.bar(x + 0.2, win, 0.4, label="window", color="#e07b39")
    step = max(1, len(labels) // 8)
    ax.set_xticks(x[::step], [str(s)[:10] for s in labels[::step]], rotation=45, fontsize=7)
    score = verdict.get("score")
    title = f"{name}: {verdict['status']}" + (f" ({verdict['method']} {score:.3f})"
                                              if score is not None else "")
    ax.set_title(title, fontsize=9, color="#b00" if verdict.get("drifted") else "#222")
    ax.set_ylabel("share", fontsize=8)
    ax.legend(fontsize=7)
    return _svg(fig)


def scores_figure(drift: dict) -> str:
    plt = _plt()
    names = [n for n, f in drift["features"].items() if f["score"] is not None]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.22 * len(names) + 1)))
    scores = [drift["features"][n]["score"] for n in names]
    thresholds = [drift["features"][n]["threshold"] for n in names]
    colors = ["#c33" if drift["features"][n]["drifted"] else "#5a8" for n in names]
    y = np.arange(len(names))
    ax.barh(y, scores, color=colors)
    ax.scatter(thresholds, y, marker="|", s=200, color="#222", label="threshold")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel("drift score")
    ax.set_title("drift score per feature (red: drifted)", fontsize=10)
    if names:
        ax.legend(fontsize=7)
    return _svg(fig)


def timeline_figure(version: dict) -> str:
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.2), sharex=True)
    points = version["timeline"]
    x = np.arange(len(points))
    labels = [p["start"][11:16] for p in points]
    top.plot(x, [p["p50_ms"] or np.nan for p in points], marker=".", label="p50")
    top.plot(x, [p["p99_ms"] or np.nan for p in points], marker=".", label="p99")
    top.set_ylabel("latency (ms)")
    top.legend(fontsize=7)
    metric = version["quality"]["quality_metric"]
    bottom.plot(x, [np.nan if p["quality"] is None else p["quality"] for p in points],
                marker="o", color="#6a3")
    bottom.set_ylabel(f"{metric} (labeled)")
    bottom.set_xticks(x[::max(1, len(x) // 8)], labels[::max(1, len(x) // 8)], fontsize=7)
    top.set_title(f"v{version['version']}: latency and quality over the window", fontsize=10)
    return _svg(fig)


def figures(report: dict) -> dict[str, str]:
    """The champion's plots by name (logged to the MLflow run beside the page)."""
    top = report["versions"][0]
    out = {"drift_scores": scores_figure(top["drift"]), "timeline": timeline_figure(top)}
    for name in list(top["profile"])[:_MAX_FEATURE_PLOTS]:
        if name in top["drift"]["features"]:
            out[f"feature_{name}"] = feature_figure(name, top["profile"][name],
                                                    top["window_counts"].get(name),
                                                    top["drift"]["features"][name])
    return out


def _table(version: dict) -> str:
    rows = []
    for name, f in version["drift"]["features"].items():
        css = "drift" if f["drifted"] else ("ok" if f["drifted"] is False else "")
        score = "-" if f["score"] is None else f"{f['score']:.4f}"
        rows.append(f"<tr class='{css}'><td>{html.escape(name)}</td><td>{f['method']}</td>"
                    f"<td>{score}</td><td>{f['threshold']}</td><td>{f['status']}</td>"
                    f"<td>{f.get('null_rate', '-')}</td></tr>")
    return ("<table><tr><th>feature</th><th>method</th><th>score</th><th>threshold</th>"
            "<th>status</th><th>null rate</th></tr>" + "".join(rows) + "</table>")


def _version_section(version: dict, plots: bool, figs: dict | None) -> str:
    q, lat = version["quality"], version["latency"]
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in q["metrics"].items()) or "no labels yet"
    pred = version["prediction_drift"]
    pred_text = ("no prediction profile" if pred is None else
                 f"prediction drift: {'yes' if pred['detected'] else 'no'}")
    parts = [f"<h2>v{html.escape(version['version'])} "
             f"{html.escape(', '.join('@' + a for a in version['aliases']))}</h2>",
             f"<p>{version['rows']} rows; drift: "
             f"<b>{'DETECTED' if version['drift']['detected'] else 'none'}</b>; {pred_text}; "
             f"labeled {q['labeled']} (coverage {q['coverage']}); {html.escape(metrics)}; "
             f"latency p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms</p>", _table(version)]
    if plots and figs is not None:
        parts.append(figs["drift_scores"])
        parts.append(figs["timeline"])
        parts.append("<div class='grid'>" + "".join(v for k, v in figs.items()
                                                    if k.startswith("feature_")) + "</div>")
    return "\n".join(parts)


def render_html(report: dict) -> str:
    figs = figures(report) if report["versions"][0]["rows"] else None
    title = f"mlrt monitor: {report['model']} v{report['version']}"
    window = report["window"]
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>window {window['since']} .. {window['until']}: <b>"
            f"{html.escape(report['message'])}</b> ({report['total_rows']} rows, "
            f"{report['unknown_rows']} of unknown versions)</p>"]
    for i, version in enumerate(report["versions"]):
        body.append(_version_section(version, i == 0, figs))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
