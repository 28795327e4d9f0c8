"""The closed-loop scenario shared by tests/e2e/test_loop.py and benchmarks/loop.py: a
synthetic task where a shift of the traffic hurts the served model, a load client that counts
every answer, and `mlrt watch --once` cycles run as a user runs them, their lines timed.

The task: x1..x4 ~ N(0, 1), y = x2 > 0 (3% of labels flipped). The shifted traffic comes from a
new segment, x1 ~ N(4, 1), where y = x2 > 1: v1 never saw it and keeps answering x2 > 0 (about
2/3 right); a tree retrained on the source plus the labeled captured rows learns the segment.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from user import MLRT, mlrt_env

NAME = "loop-e2e"
SPEC = "loop.yaml"
FEATURES = ("x1", "x2", "x3", "x4")
DECISION = re.compile(r"\[watch\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\w+)")


def rows(n: int, seed: int, shifted: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(size=n) for name in FEATURES})
    if shifted:
        frame["x1"] += 4.0
    y = (frame["x2"] > (1.0 if shifted else 0.0)).astype("int64")
    flip = rng.random(n) < 0.03
    frame["y"] = np.where(flip, 1 - y, y)
    return frame


def spec(canary_weight: float = 0.5, min_labeled: int = 40) -> dict:
    return {
        "name": NAME, "task": "classification", "storage": ".mlrt",
        "data": {"source": {"kind": "parquet", "path": "source.parquet"}, "target": "y",
                 "split": {"test": 0.3, "validation": 0.0, "seed": 0}},
        "model": {"kind": "sklearn", "estimator": "sklearn.tree.DecisionTreeClassifier",
                  "params": {"max_depth": 5, "random_state": 0}},
        "evaluate": {"metrics": ["accuracy"], "gate": {"metric": "accuracy", "min": 0.8}},
        "serve": {"canary": {"alias": "challenger", "weight": canary_weight},
                  "capture": {"sample": 1.0, "flush_s": 1}},
        "monitor": {"interval": "10s", "drift": {"min_rows": 50},
                    "triggers": {"drift": {"min_windows": 2}},
                    "retrain": {"data": "source+captures", "cooldown": "1h", "max_per_day": 5},
                    "rollout": {"canary_weight": canary_weight, "min_labeled": min_labeled}},
    }


def write_project(work: Path, source_rows: int = 1000, **kw) -> None:
    rows(source_rows, 0, shifted=False).to_parquet(work / "source.parquet")
    (work / SPEC).write_text(yaml.safe_dump(spec(**kw)))


@dataclass
class Answer:
    t: float  # time.monotonic() when the answer came
    ok: bool
    version: str | None = None
    prediction: int | None = None
    label: int | None = None
    error: str | None = None


@dataclass
class LoadClient:
    """One thread sending shifted single-row requests, counting EVERY answer (an exception or
    a non-2xx is a failure), and posting each answered request's label via /feedback."""

    url: str
    pause_s: float = 0.03
    label_every: int = 10
    answers: list[Answer] = field(default_factory=list)
    feedback_failures: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.first_request: float | None = None

    def start(self) -> LoadClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    @property
    def failures(self) -> list[Answer]:
        return [a for a in list(self.answers) if not a.ok]

    def versions_since(self, t: float) -> set[str | None]:
        return {a.version for a in list(self.answers) if a.t >= t and a.ok}

    def serving(self, version: str, quiet_s: float = 3.0, timeout_s: float = 120) -> float:
        """Wait until only `version` has answered for quiet_s; return when that began: the
        first answer after the last one from another version."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answers = [a for a in list(self.answers) if a.ok]
            other = [a.t for a in answers if a.version != version]
            begun = next((a.t for a in answers if a.version == version
                          and (not other or a.t > other[-1])), None)
            if begun is not None and time.monotonic() - begun >= quiet_s:
                return begun
            time.sleep(0.5)
        raise AssertionError(f"v{version} is not the only version answering: "
                             f"{self.versions_since(time.monotonic() - quiet_s)}")

    def accuracy(self, version: str | None = None, since: float = 0.0,
                 until: float = float("inf")) -> tuple[float, int]:
        picked = [a for a in list(self.answers) if a.ok and since <= a.t < until
                  and (version is None or a.version == version)]
        right = sum(a.prediction == a.label for a in picked)
        return (right / len(picked) if picked else float("nan")), len(picked)

    def _post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.url}{path}", json.dumps(body).encode(),
                                         {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def _run(self) -> None:
        seed, unlabeled = 100, []
        while not self._stop.is_set():
            batch = rows(50, seed, shifted=True)
            seed += 1
            for record in batch.to_dict("records"):
                if self._stop.is_set():
                    break
                label = int(record.pop("y"))
                self.first_request = self.first_request or time.monotonic()
                try:
                    answer = self._post("/predict", {"instances": [record]})
                    self.answers.append(Answer(time.monotonic(), True,
                                               answer["model"]["version"],
                                               int(answer["predictions"][0]), label))
                    unlabeled.append({"request_id": answer["request_id"], "label": label})
                except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
                    detail = e.read().decode()[:300] if isinstance(e, urllib.error.HTTPError) \
                        else repr(e)
                    self.answers.append(Answer(time.monotonic(), False, error=detail))
                if len(unlabeled) >= self.label_every:
                    self._feedback(unlabeled)
                    unlabeled = []
                time.sleep(self.pause_s)
        if unlabeled:
            self._feedback(unlabeled)

    def _feedback(self, labels: list[dict]) -> None:
        try:
            accepted = self._post("/feedback", {"labels": labels})["accepted"]
            if accepted != len(labels):
                self.feedback_failures.append(f"accepted {accepted} of {len(labels)}")
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            self.feedback_failures.append(repr(e))


@dataclass
class Cycle:
    """One `mlrt watch --once` run: its return code and stderr lines with their times."""

    returncode: int
    lines: list[tuple[float, str]]
    started: float
    ended: float

    @property
    def text(self) -> str:
        return "".join(line for _, line in self.lines)

    @property
    def actions(self) -> list[str]:
        return [m.group(1) for _, line in self.lines if (m := DECISION.search(line))]

    def first(self, needle: str) -> float | None:
        return next((t for t, line in self.lines if needle in line), None)


def watch_once(work: Path, *args: str, timeout: float = 600) -> Cycle:
    started = time.monotonic()
    proc = subprocess.Popen([MLRT, "watch", SPEC, "--once", *args], cwd=work, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=mlrt_env())
    lines: list[tuple[float, str]] = []
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            lines.append((time.monotonic(), line))
        proc.wait()
    finally:
        timer.cancel()
    return Cycle(proc.returncode, lines, started, time.monotonic())
