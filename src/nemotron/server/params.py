"""The JSON object of a request body, and values shown in error messages."""
from __future__ import annotations

import json
import re
from typing import Any

from nemotron.server.errors import bad_request


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; NaN and Infinity are not JSON and are refused."""
    if not raw.strip():
        raise bad_request("the request body is empty; send a JSON object")

    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not valid JSON")

    try:
        data = json.loads(raw, parse_constant=refuse)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad_request(f"the request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {_kind(data)}")
    if not _SURROGATE_ESCAPE.search(raw):
        return data
    try:  # JSON may escape lone UTF-16 surrogates ("\ud800"), which are no characters and cannot be tokenized
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise bad_request(f"the request holds a lone surrogate {err.object[err.start:err.end]!a}, which is not "
                          "a character") from None
    return data


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # pairs are fine; only then is the slow check needed


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def show(value: object) -> str:
    """A value as JSON, cut to 60 characters."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (ValueError, RecursionError):
        text = _kind(value)
    return text if len(text) <= 60 else text[:57] + "..."
