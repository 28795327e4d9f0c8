"""pydantic's validation errors -> one `dotted.path: message` line each, in the spec's own
words (`train.workers: must be >= 1, got 0`), with a did-you-mean for unknown fields."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError

from runtime.spec.base import FieldError

_MESSAGES = [
    (re.compile(r"^Input should be greater than or equal to (.+)$"), r"must be >= \1"),
    (re.compile(r"^Input should be greater than (.+)$"), r"must be > \1"),
    (re.compile(r"^Input should be less than or equal to (.+)$"), r"must be <= \1"),
    (re.compile(r"^Input should be less than (.+)$"), r"must be < \1"),
    (re.compile(r"^Input should be (.+)$"), r"must be \1"),
    (re.compile(r"^Value error, (.+)$"), r"\1"),
    (re.compile(r"^String should match pattern (.+)$"), r"must match \1"),
]


_NO_INPUT_ECHO = {"value_error", "assertion_error", "extra_forbidden", "union_tag_invalid",
                  "union_tag_not_found"}


def format_errors(exc: ValidationError, raw: dict[str, Any], root: type[BaseModel]) -> list[str]:
    """One `dotted.path: message` line per error of validating `raw` as `root`."""
    lines = []
    for err in exc.errors():
        ctx_error = (err.get("ctx") or {}).get("error")
        loc = list(err["loc"])
        if isinstance(ctx_error, FieldError):
            loc = loc + list(ctx_error.loc)
            message = str(ctx_error)
        else:
            message = _message(err, raw, root)
        path = _dotted(loc, raw)
        if err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] not in _NO_INPUT_ECHO and not isinstance(ctx_error, FieldError):
            message = f"{message}, got {_short(err['input'])}"
        lines.append(f"{path or '(top level)'}: {message}")
    return lines


def _message(err: dict[str, Any], raw: dict[str, Any], root: type[BaseModel]) -> str:
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        allowed = _allowed_fields(list(err["loc"][:-1]), raw, root)
        hint = difflib.get_close_matches(name, allowed, n=1)
        message = f"unknown field '{name}'"
        if hint:
            message += f"; did you mean '{hint[0]}'?"
        elif allowed:
            message += f" (allowed: {', '.join(allowed)})"
        return message
    if err["type"] == "union_tag_invalid":
        return (f"unknown {err['ctx']['discriminator'].strip(chr(39))} "
                f"{err['ctx']['tag']!r}; choose from {err['ctx']['expected_tags']}")
    if err["type"] == "union_tag_not_found":
        return f"needs a {err['ctx']['discriminator'].strip(chr(39))} field"
    message = err["msg"]
    for pattern, repl in _MESSAGES:
        if pattern.match(message):
            return pattern.sub(repl, message)
    return message


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(loc: list[Any], raw: Any) -> str:
    """`('model', 'torch_mlp', 'hidden', 0)` -> `model.hidden[0]`: drop discriminator tags."""
    out: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            out.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            continue
        if isinstance(node, dict) and item not in node and item in (
            node.get("kind"), node.get("op")
        ):
            continue  # pydantic's tag segment for a discriminated union
        if item in ("function-after", "function-before") or str(item).startswith("function-"):
            continue
        out.append(("." if out else "") + str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(out)


def _allowed_fields(loc: list[Any], raw: Any, root: type[BaseModel]) -> list[str]:
    """Field names of the section at `loc` (resolving discriminated unions by the raw data)."""
    model: Any = root
    node = raw
    for item in loc:
        if isinstance(item, int):
            node = node[item] if isinstance(node, list) and item < len(node) else None
            model = _unwrap(model, node, list_item=True)
            continue
        if isinstance(node, dict) and item not in node and item in (
            node.get("kind"), node.get("op")
        ):
            continue
        fields = getattr(model, "model_fields", {})
        if item not in fields:
            return []
        node = node.get(item) if isinstance(node, dict) else None
        model = _unwrap(fields[item].annotation, node)
    return list(getattr(model, "model_fields", {}))


def _unwrap(annotation: Any, node: Any, list_item: bool = False) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            chosen = members[0] if len(members) == 1 else None
            for m in members:
                m = typing.get_args(m)[0] if typing.get_origin(m) is Annotated else m
                tag = next((f for f in ("kind", "op") if f in getattr(m, "model_fields", {})), None)
                if tag and isinstance(node, dict) and node.get(tag) in typing.get_args(
                    m.model_fields[tag].annotation
                ):
                    chosen = m
            if chosen is None:
                return None
            annotation = chosen
        elif list_item and origin is list:
            annotation = typing.get_args(annotation)[0]
            list_item = False
        else:
            return annotation
