"""Dotted paths into plain spec data (`train.lr`): the one setter behind `--set` overrides and
tune trials."""

from __future__ import annotations

import json
from typing import Any


def set_paths(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of plain spec data with each dotted path set to its value (paths that the spec
    already validated: tune.space, a trial's config)."""
    raw = json.loads(json.dumps(raw))
    for path, value in values.items():
        put_path(raw, path, value)
    return raw


def put_path(raw: dict[str, Any], path: str, value: Any) -> str | None:
    """Set dotted `path` in plain spec data, in place; return the prefix that is not a
    section (and set nothing) when there is one."""
    node = raw
    *parents, last = path.split(".")
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return ".".join(parents[: i + 1])
    node[last] = value
    return None
