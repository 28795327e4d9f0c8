"""Tune-space probing: every value a domain can produce is validated against the field it
sets, before Ray starts (a trial must not be the first to find a bad value)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from runtime.spec.messages import format_errors
from runtime.spec.paths import set_paths


def domain_probes(kind: str, bounds: list) -> list:
    """Values that stand for everything a domain can produce: both ends (randint's high is
    exclusive), a non-integral point for continuous domains, every listed value."""
    if kind == "randint":
        return [bounds[0], bounds[1] - 1]
    if kind in ("uniform", "loguniform"):
        return [bounds[0], bounds[1], bounds[0] + 0.371 * (bounds[1] - bounds[0])]
    return list(bounds)


def space_value_problem(spec: BaseModel, path: str, domain: dict[str, Any]) -> str | None:
    """Validate the spec with each probe value of the domain at `path`: a value of the wrong
    type or out of the field's range fails here, before Ray starts, not in a trial."""
    (kind, bounds), = domain.items()
    base = spec.model_dump(mode="json", exclude={"tune"})
    for value in domain_probes(kind, bounds):
        raw = set_paths(base, {path: value})
        try:
            type(spec).model_validate(raw)
        except ValidationError as e:
            problem = format_errors(e, raw, type(spec))[0]
            hint = ("; this field takes integers: use randint or choice"
                    if kind in ("uniform", "loguniform") and "integer" in problem else "")
            return f"{kind} value {value!r} does not fit: {problem}{hint}"
    return None


def field_problem(spec: BaseModel, parts: list[str]) -> str | None:
    """Why a dotted path (`train.lr`) does not name one field of the spec, or None."""
    node: Any = spec
    for i, part in enumerate(parts):
        fields = type(node).model_fields if isinstance(node, BaseModel) else None
        if fields is None or part not in fields:
            where = ".".join(parts[:i]) or "the spec"
            options = ", ".join(fields) if fields else "nothing"
            return f"names no field: {where} has no '{part}' (it has {options})"
        node = getattr(node, part)
        if node is None:
            return f"names a section that is not in the spec: {'.'.join(parts[: i + 1])}"
    if isinstance(node, BaseModel):
        return "names a section; name one of its fields instead"
    return None
