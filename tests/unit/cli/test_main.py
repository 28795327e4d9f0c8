"""Unit: every error reaches the user as text. An error naming a path in brackets (HAProxy's
`[/tmp/.../haproxy.cfg:45]`) once crashed the CLI's error line with rich's MarkupError, so
`mlrt deploy` printed a traceback instead of the reason."""

from __future__ import annotations

import sys

from runtime.cli.main import _run_app


def test_an_error_with_brackets_is_printed_as_written(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    name = "[/tmp/haproxy.cfg:45] [/red].yaml"
    monkeypatch.setattr(sys, "argv", ["mlrt", "validate", name])
    code = _run_app()
    err = capsys.readouterr().err
    assert code == 2
    assert name in err.replace("\n", "")
