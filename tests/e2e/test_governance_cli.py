"""End to end: governance as a user meets it on the CLI: every decision audited with its
actor and reason, missing reasons refused (exit 2), manual approval, the slice gate (exit 1
naming the slice), `mlrt audit` listing, `--at` across promote and rollback, `--verify`
catching an edited, deleted and reordered event, the model card, and a served model's
events."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_breast_cancer
from user import mlrt, user_dir  # tests/e2e/user.py

pytestmark = pytest.mark.e2e
NAME = "gov-bc"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A project with a spec slicing by `site`, a column that is not a model input (site B's
    labels are noisy)."""
    work = user_dir(tmp_path_factory, "gov-user")
    frame = load_breast_cancer(as_frame=True).frame
    rng = np.random.default_rng(0)
    frame["site"] = rng.choice(["A", "B"], size=len(frame))
    flip = (frame["site"] == "B") & (rng.random(len(frame)) < 0.3)
    frame["target"] = np.where(flip, 1 - frame["target"], frame["target"])
    frame.to_parquet(work / "bc.parquet")
    spec = {
        "name": NAME, "task": "classification", "storage": ".mlrt",
        "data": {"source": {"kind": "parquet", "path": "bc.parquet"}, "target": "target",
                 "features": [str(c) for c in load_breast_cancer().feature_names],
                 "split": {"test": 0.3, "validation": 0.0, "seed": 3},
                 "preprocess": [{"op": "standard_scale"}]},
        "model": {"kind": "sklearn", "estimator": "sklearn.linear_model.LogisticRegression",
                  "params": {"max_iter": 500}},
        "evaluate": {"slices": ["site"], "min_slice_rows": 20,
                     "gate": {"metric": "accuracy", "min": 0.5}},
        "card": {"owner": "risk team", "intended_use": "triage, never a diagnosis"},
    }
    (work / "gov.yaml").write_text(yaml.safe_dump(spec))
    return work


def _events(workdir: Path) -> list[dict]:
    result = mlrt("audit", NAME, "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _show(workdir: Path, version: str) -> dict:
    return json.loads(mlrt("models", "show", NAME, version, cwd=workdir).stdout)


def test_run_records_the_registered_version_and_the_alias_move(workdir):
    result = mlrt("run", "gov.yaml", "--actor", "ci-bot", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "slice site=B" in result.stderr
    registered, moved = _events(workdir)
    assert registered["kind"] == "registered" and registered["actor"] == "ci-bot"
    assert registered["data"]["gate"]["passed"] is True
    assert registered["data"]["metrics"] == _show(workdir, "1")["metrics"]
    assert moved["kind"] == "alias_moved" and moved["data"]["to"] == "1"
    assert moved["prev"] == registered["hash"]
    slices = _show(workdir, "1")["slices"]
    assert [s["value"] for s in slices] == ["A", "B"] and all(s["gated"] for s in slices)


def test_a_slice_gap_fails_the_gate_with_exit_1_naming_the_slice(workdir):
    result = mlrt("run", "gov.yaml", "--set", "evaluate.gate.max_slice_gap=0.05", cwd=workdir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "gate failed" in result.stderr and "worst slice site=B: accuracy" in result.stderr
    assert _show(workdir, "@champion")["version"] == "1"
    assert _events(workdir)[-1]["data"]["gate"]["worst_slice"]["slice"] == "site=B"


def test_manual_approval_waits_then_approve_moves_the_serving_alias(workdir):
    result = mlrt("run", "gov.yaml", "--set", "register.approval=manual",
                  "--set", "model.params.C=0.3", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "waiting for approval: mlrt models approve gov-bc 3" in result.stderr
    assert _show(workdir, "@candidate")["version"] == "3"
    assert _show(workdir, "@champion")["version"] == "1"
    approved = mlrt("models", "approve", NAME, "3", "--reason", "slices reviewed",
                    "--actor", "ann", cwd=workdir)
    assert approved.returncode == 0, approved.stderr
    assert "gov-bc@champion -> v3 (was v1)" in approved.stdout
    assert _show(workdir, "@champion")["version"] == "3"
    event = _events(workdir)[-1]
    assert (event["kind"], event["actor"], event["reason"]) == ("approved", "ann",
                                                                "slices reviewed")
    assert event["data"] == {"version": "3", "alias": "champion", "from": "1", "to": "3"}


def test_reject_tags_the_version_and_leaves_the_alias(workdir):
    result = mlrt("run", "gov.yaml", "--set", "register.approval=manual",
                  "--set", "model.params.C=0.2", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    rejected = mlrt("models", "reject", NAME, "4", "--reason", "worse at site B", cwd=workdir)
    assert rejected.returncode == 0, rejected.stderr
    assert _show(workdir, "4")["tags"]["mlrt.approval"] == "rejected"
    assert _show(workdir, "@champion")["version"] == "3"
    assert _events(workdir)[-1]["kind"] == "rejected"
    again = mlrt("models", "approve", NAME, "4", "--reason", "changed my mind", cwd=workdir)
    assert again.returncode == 2 and "it was rejected" in again.stderr


def test_a_decision_without_a_reason_exits_2_and_changes_nothing(workdir):
    before = _events(workdir)
    for command in (["models", "promote", NAME, "1"], ["models", "rollback", NAME],
                    ["models", "approve", NAME, "4"], ["models", "reject", NAME, "4"],
                    ["models", "promote", NAME, "1", "--reason", " "]):
        result = mlrt(*command, cwd=workdir)
        assert result.returncode == 2 and "--reason: required" in result.stderr, command
    assert _events(workdir) == before
    assert _show(workdir, "@champion")["version"] == "3"


def test_at_answers_across_promote_and_rollback(workdir):
    promoted = mlrt("models", "promote", NAME, "1", "--reason", "v3 regressed", cwd=workdir)
    assert promoted.returncode == 0, promoted.stderr
    back = mlrt("models", "rollback", NAME, "--reason", "false alarm", cwd=workdir)
    assert back.returncode == 0 and "-> v3 (rolled back from v1)" in back.stdout
    events = _events(workdir)
    times = {e["kind"]: e["time"] for e in events}  # the last of each kind

    def at(when: datetime) -> dict:
        result = mlrt("audit", NAME, "--at", when.isoformat(), "--json", cwd=workdir)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["aliases"]

    first = datetime.fromisoformat(events[0]["time"])
    assert at(first - timedelta(seconds=1)) == {}
    assert at(datetime.fromisoformat(events[1]["time"]))["champion"] == "1"
    assert at(datetime.fromisoformat(times["approved"]))["champion"] == "3"
    assert at(datetime.fromisoformat(times["promoted"])) == {"champion": "1",
                                                              "candidate": "4"}
    assert at(datetime.fromisoformat(times["rolled_back"]))["champion"] == "3"
    text = mlrt("audit", NAME, "--at", times["promoted"], cwd=workdir).stdout
    assert "@champion -> v1" in text
    listed = mlrt("audit", NAME, "--since", "1h", cwd=workdir)
    assert listed.returncode == 0 and "rolled_back" in listed.stdout
    assert "false alarm" in listed.stdout
    bad = mlrt("audit", NAME, "--at", "yesterday", cwd=workdir)
    assert bad.returncode == 2 and "--at: expected an ISO time" in bad.stderr


def test_verify_passes_then_catches_an_edited_a_deleted_and_a_reordered_event(workdir):
    ok = mlrt("audit", NAME, "--verify", cwd=workdir)
    assert ok.returncode == 0, ok.stderr
    assert "hash chain intact; the registry's aliases and versions match it" in ok.stdout
    folder = workdir / ".mlrt" / "audit" / NAME
    backup = workdir / "audit-backup"
    shutil.copytree(folder, backup)
    files = sorted(folder.glob("*.json"))

    def broken() -> str:
        result = mlrt("audit", NAME, "--verify", cwd=workdir)
        assert result.returncode == 1, result.stdout
        shutil.rmtree(folder)
        shutil.copytree(backup, folder)
        return result.stderr

    event = json.loads(files[2].read_text())
    event["data"]["metrics"]["accuracy"] = 0.99
    files[2].write_text(json.dumps(event))
    edited = broken()
    assert "event #2 (registered" in edited and "was edited" in edited
    files[3].unlink()
    assert "event #3 is missing (deleted?)" in broken()
    a, b = files[4].read_text(), files[5].read_text()
    files[4].write_text(b)
    files[5].write_text(a)
    assert "event #4 (000000000004.json) holds event #5" in broken()
    files[-1].unlink()  # the newest event gone: the registry no longer matches the trail
    assert "the trail says" in broken()
    assert mlrt("audit", NAME, "--verify", cwd=workdir).returncode == 0


def test_card_on_stdout_and_as_html(workdir):
    info = _show(workdir, "3")
    card = mlrt("models", "card", NAME, "3", cwd=workdir)
    assert card.returncode == 0, card.stderr
    assert card.stdout.startswith(f"# Model card: {NAME} v3")
    assert f"**test accuracy**: {info['metrics']['accuracy']:.4f}" in card.stdout
    assert "**intended use**: triage, never a diagnosis" in card.stdout
    assert "| approved | ann | slices reviewed |" in card.stdout
    written = mlrt("models", "card", NAME, "3", "-o", "card.html", cwd=workdir)
    assert written.returncode == 0 and (workdir / "card.html").read_text().startswith(
        "<!doctype html>")


def test_serve_smoke_records_served_and_stopped(workdir):
    result = mlrt("serve", f"models:/{NAME}@champion", "--smoke", "--port", "0",
                  "--actor", "ops", cwd=workdir, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    served, stopped = _events(workdir)[-2:]
    assert served["kind"] == "served" and served["actor"] == "ops"
    assert served["data"]["version"] == "3" and served["data"]["url"].startswith("http://")
    assert stopped["kind"] == "serve_stopped" and stopped["data"]["url"] == served["data"]["url"]


def test_a_deploy_is_recorded_before_it_runs_and_its_failure_after(workdir):
    from serve_apps.local import free_port

    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = mlrt("deploy", "gov.yaml", "--address", address, "--actor", "ops", cwd=workdir)
    assert result.returncode == 2 and "serve deploy to" in result.stderr
    deployed, failed = _events(workdir)[-2:]
    assert deployed["kind"] == "deployed" and deployed["actor"] == "ops"
    assert deployed["data"]["version"] == "3" and deployed["data"]["address"] == address
    assert failed["kind"] == "failed" and failed["data"]["event"] == deployed["seq"]
