"""Unit: `mlrt monitor` refuses bad input with exit 2 and a message naming it, before Ray
starts (the command's own exit-code mapping, runtime.cli.main, in-process)."""

from __future__ import annotations

import sys

import pytest
import yaml
from factories import spec_data

from runtime.cli.main import _run_app


def _run(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["mlrt", "monitor", *args])
    code = _run_app()
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("args, message", [
    (["--since", "yesterday"], "--since: expected a duration"),
    (["--since", "1h", "--until", "3h"], "is not before --until"),
    (["--labels", "nowhere.csv"], "--labels: nowhere.csv does not exist"),
    (["--report", "out.pdf"], "--report: out.pdf: expected a .html"),
])
def test_bad_arguments_exit_2(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, text = _run(monkeypatch, capsys, "models:/m@champion", "--storage",
                      str(tmp_path / "store"), *args)
    assert code == 2 and message in text.replace("\n", " ")


def test_unknown_model_exits_2(monkeypatch, capsys, tmp_path):
    code, text = _run(monkeypatch, capsys, "models:/nobody@champion", "--storage",
                      str(tmp_path / "store"))
    assert code == 2 and "nobody" in text


def test_bad_uri_and_bad_spec_exit_2(monkeypatch, capsys, tmp_path):
    code, text = _run(monkeypatch, capsys, "models:/x/y/z")
    assert code == 2 and "model URI" in text
    raw = spec_data(tmp_path / "store", "m", monitor={"drift": {"min_rows": 0}})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    code, text = _run(monkeypatch, capsys, str(path))
    assert code == 2 and "monitor.drift.min_rows" in text
    code, text = _run(monkeypatch, capsys, str(tmp_path / "missing.yaml"))
    assert code == 2


def test_the_monitor_section_does_not_change_what_is_trained(tmp_path):
    from factories import make_spec

    plain = make_spec(tmp_path, "m")
    tuned = make_spec(tmp_path, "m", monitor={"drift": {"threshold": 0.2, "min_rows": 50}})
    assert tuned.monitor.drift.min_rows == 50 and plain.monitor.drift.min_rows == 200
    assert plain.spec_hash() == tuned.spec_hash()  # a resumed search still matches its run
