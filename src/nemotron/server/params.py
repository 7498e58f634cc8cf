"""Reading fields of a JSON request body, each check failing with a message that names the field."""
from __future__ import annotations

import json
import math
from typing import Any

from nemotron.server.errors import bad_request

MISSING: Any = object()


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
    try:  # JSON may escape lone UTF-16 surrogates ("\ud800"), which are no characters and cannot be tokenized
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise bad_request(f"the request holds a lone surrogate {err.object[err.start:err.end]!a}, which is not "
                          "a character") from None
    return data


def get_bool(body: dict, name: str, default: bool | None) -> bool | None:
    """true or false; missing or null gives the default."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false, got {_show(value)}", name)
    return value


def get_int(body: dict, name: str, default: int | None, *, minimum: int | None = None,
            maximum: int | None = None, nullable: bool = False) -> int | None:
    value = body.get(name, MISSING)
    if value is MISSING or (value is None and nullable):
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer, got {_show(value)}", name)
    _check_range(name, value, minimum, maximum)
    return value


def get_number(body: dict, name: str, default: float | None, *, minimum: float | None = None,
               maximum: float | None = None, above: float | None = None, nullable: bool = False) -> float | None:
    """A finite number in [minimum, maximum]; `above` makes the lower bound exclusive."""
    value = body.get(name, MISSING)
    if value is MISSING or (value is None and nullable):
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{name} must be a number, got {_show(value)}", name)
    if above is not None and not value > above:
        raise bad_request(f"{name} must be greater than {above:g}, got {value}", name)
    _check_range(name, value, minimum, maximum)
    return float(value)


def get_str(body: dict, name: str, default: str | None) -> str | None:
    value = body.get(name, MISSING)
    if value is MISSING or value is None:
        return default
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string, got {_show(value)}", name)
    return value


def get_str_list(body: dict, name: str, default: list[str], *, single_ok: bool = False,
                 max_items: int | None = None) -> list[str]:
    """A list of strings; with `single_ok` a lone string counts as a list of one."""
    value = body.get(name, MISSING)
    if value is MISSING or value is None:
        return list(default)
    if single_ok and isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        wanted = "a string or a list of strings" if single_ok else "a list of strings"
        raise bad_request(f"{name} must be {wanted}, got {_show(value)}", name)
    if max_items is not None and len(value) > max_items:
        raise bad_request(f"{name} holds {len(value)} items; at most {max_items} are allowed", name)
    return value


def get_object(body: dict, name: str) -> dict | None:
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise bad_request(f"{name} must be an object, got {_show(value)}", name)
    return value


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise bad_request(f"{name} must be >= {minimum:g}, got {value}", name)
    if maximum is not None and value > maximum:
        raise bad_request(f"{name} must be <= {maximum:g}, got {value}", name)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _show(value: object) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (ValueError, RecursionError):
        text = _kind(value)
    return text if len(text) <= 60 else text[:57] + "..."
