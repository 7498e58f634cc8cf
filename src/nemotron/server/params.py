"""A request body: its JSON object, validated by its model (schemas.py), failures worded as a 400
that names the field ("top_k must be >= 0, got -1")."""
from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nemotron.server.errors import APIError, bad_request

M = TypeVar("M", bound=BaseModel)


# What a field holds, for the message when its value has the wrong shape (unions give pydantic
# one error per alternative; one sentence reads better).
EXPECTS = {
    "sentences": "a list of strings (the prompts)",
    "end_strings": "a list of strings",
    "stop": "a string or a list of strings",
    "prompt": "a string, a list of strings, a list of token ids or a list of such lists, none of them empty",
    "messages": "a non-empty list of {role, content} objects",
    "content": 'a string or a list of {"type": "text", "text": ...} parts',
}


def parse(raw: bytes, model: type[M]) -> M:
    """The body as `model`; an invalid one raises a 400 naming the first offending field."""
    data = parse_json_object(raw)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise _bad_request(err.errors(include_url=False), data) from None


def _bad_request(errors: list[dict], data: dict) -> APIError:
    error = errors[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    alternatives = [e for e in errors if e["loc"][:1] == (field,)]  # a union: one error per alternative
    specific = [e for e in alternatives if e["type"] not in _TYPE_WORDS and e["type"] != "too_short"]
    if len(alternatives) > 1 and specific:  # the alternative of the right shape, wrong in a detail
        error, alternatives = specific[0], specific[:1]
    elif len(alternatives) > 1:  # the one alternative that got furthest into the value is its shape
        depths = sorted((len(e["loc"]) for e in alternatives), reverse=True)
        if depths[0] > depths[1]:
            error = max(alternatives, key=lambda e: len(e["loc"]))
            alternatives = [error]
    whole = len(error["loc"]) == 1 or (field != "messages" and len(alternatives) > 1)
    if field in EXPECTS and whole and (error["type"] in _TYPE_WORDS or error["type"] == "too_short"):
        return bad_request(f"{field} must be {EXPECTS[field]}, got {show(data.get(field))}", field)
    kind = error["type"]
    name, sent = _path(error["loc"], data, kind == "missing")
    ctx, got = error.get("ctx") or {}, show(sent)
    if kind in _TYPE_WORDS and len(alternatives) > 1 and name.endswith(".content"):
        return bad_request(f"{name} must be {EXPECTS['content']}, got {got}", field)
    if kind == "extra_forbidden":  # OpenAI's words for a field it does not know
        return bad_request(f"Unrecognized request argument supplied: {name}", field)
    if kind == "missing":
        return bad_request(f"{name} must be {EXPECTS[name]}" if name in EXPECTS else f"{name} is required", field)
    if kind in _TYPE_WORDS:
        return bad_request(f"{name} must be {_TYPE_WORDS[kind]}, got {got}", field)
    for key, words in (("ge", ">="), ("le", "<="), ("gt", "greater than"), ("lt", "less than")):
        if key in ctx:
            return bad_request(f"{name} must be {words} {_bound(ctx[key])}, got {got}", field)
    if kind == "string_too_short":
        return bad_request(f"{name} must not be empty", field)
    if kind == "too_short" and "min_length" in ctx:
        return bad_request(f"{name} must hold at least {ctx['min_length']} item(s)", field)
    if kind == "too_long" and "max_length" in ctx:
        unit = "characters" if isinstance(error.get("input"), str) else "items"
        return bad_request(f"{name} holds more than {ctx['max_length']} {unit}", field)
    if kind == "literal_error":
        return bad_request(f"{name} must be {ctx.get('expected')}, got {got}", field)
    return bad_request(f"{name}: {error['msg']}", field)


_TYPE_WORDS = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
               "finite_number": "a finite number", "bool_type": "true or false", "string_type": "a string",
               "list_type": "a list", "dict_type": "an object", "model_type": "an object",
               "model_attributes_type": "an object"}


def _bound(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _path(loc: tuple, data: Any, missing: bool = False) -> tuple[str, Any]:
    """(messages[2].content, the value sent there), skipping the union branch tags pydantic puts
    into locations; the last part of a `missing` field's location is named though it is absent."""
    text, node = "", data
    for k, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(node, dict) and (part in node or (missing and k == len(loc) - 1)):
            text += f".{part}" if text else str(part)
            node = node.get(part)
    return text, node


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
