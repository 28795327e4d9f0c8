"""Loading a spec: YAML file -> `--set` overrides -> validated JobSpec, or a SpecError naming
every bad field with its dotted path."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from runtime.spec.base import SpecError
from runtime.spec.job import JobSpec
from runtime.spec.messages import format_errors
from runtime.spec.paths import put_path


def load_spec(path: str | Path, overrides: Iterable[str] = ()) -> JobSpec:
    """Read, override and validate a spec file; raise SpecError naming every bad field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError([f"cannot read the spec file: {e.strerror}"], str(path)) from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError([f"YAML syntax error{where}: {problem}"], str(path)) from e
    if not isinstance(raw, dict):
        raise SpecError([f"the spec must be a YAML mapping, got {type(raw).__name__}"], str(path))
    return parse_spec(apply_overrides(raw, overrides, str(path)), str(path))


def parse_spec(raw: dict[str, Any], source: str = "spec") -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(format_errors(e, raw, JobSpec), source) from None


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str], source: str) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML (`[64, 32]`, `0.01`, `true`)."""
    raw = json.loads(json.dumps(raw))  # deep copy; the spec is plain YAML data
    errors = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            errors.append(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
            continue
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        not_a_section = put_path(raw, key.strip(), parsed)
        if not_a_section:
            errors.append(f"--set {key}: {not_a_section} is not a section")
    if errors:
        raise SpecError(errors, source)
    return raw


def json_schema() -> dict[str, Any]:
    schema = JobSpec.model_json_schema()
    schema["title"] = "mlrt job spec"
    return schema
