"""Turns a request validation failure into one sentence that names the field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_OBJECT_TYPES = {"model_type", "model_attributes_type", "dict_type"}


def describe_validation_error(errors: Sequence[Any]) -> str:
    if not errors:
        return "The request is malformed."
    error = errors[0]
    kind = error.get("type", "")
    loc = [str(part) for part in error.get("loc", ())]
    where, path = (loc[0] if loc else "body"), ".".join(loc[1:])
    subject = path or ("Request body" if where == "body" else where)
    ctx = error.get("ctx") or {}
    if kind == "json_invalid":
        return "Request body is not valid JSON."
    if kind == "missing":
        return f"{subject} is required." if path else "Request body is required: send a JSON object."
    if kind in _OBJECT_TYPES:
        return f"{subject} must be a JSON object."
    if kind == "string_type":
        return f"{subject} must be a string."
    if kind == "bool_type":
        return f"{subject} must be true or false."
    if kind == "list_type":
        return f"{subject} must be a list."
    if kind == "string_nul":
        return f"{subject} must not contain the NUL character (U+0000)."
    if kind == "string_too_short":
        return f"{subject} must not be empty."
    if kind == "string_too_long":
        return f"{subject} is too long: at most {ctx.get('max_length')} characters."
    if kind == "too_long":
        return f"{subject} has too many items: at most {ctx.get('max_length')}."
    if kind == "value_error":
        return str(ctx.get("error") or error.get("msg", "is invalid"))
    return f"{subject}: {error.get('msg', 'is invalid')}."
