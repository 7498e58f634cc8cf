"""Every numeric field of every request body is bounded, and a value outside its bounds is a 400
naming the field (the bounds are read from the schema the server publishes)."""
from __future__ import annotations

import pytest
import requests

from nemotron.server.openapi import document

ENDPOINTS = {"GenerateBody": ("PUT", "/generate", {"sentences": ["hi"]}),
             "CompletionBody": ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1}),
             "ChatBody": ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                           "max_tokens": 1})}


def numeric_fields(body: str) -> dict[str, dict]:
    """field -> its numeric schema (the non-null alternative)."""
    fields = {}
    for name, prop in document()["components"]["schemas"][body]["properties"].items():
        for alternative in prop.get("anyOf", [prop]):
            if alternative.get("type") in ("integer", "number"):
                fields[name] = alternative
    return fields


def out_of_range(schema: dict) -> list[float]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema["maximum"]
    step = 1 if schema["type"] == "integer" else 1e-9 * max(1.0, abs(high))
    values = [high + step, 1e30]
    values += [schema["exclusiveMinimum"]] if "exclusiveMinimum" in schema else [low - step]
    return values


CASES = [(body, name, value) for body in ENDPOINTS for name, schema in numeric_fields(body).items()
         for value in out_of_range(schema)]


def test_every_numeric_field_has_both_bounds():
    for body in ENDPOINTS:
        for name, schema in numeric_fields(body).items():
            assert "maximum" in schema and ("minimum" in schema or "exclusiveMinimum" in schema), (body, name)
    assert len(CASES) >= 3 * 30


@pytest.mark.parametrize("body, name, value", CASES, ids=[f"{b}.{n}={v:g}" for b, n, v in CASES])
def test_a_value_out_of_range_is_refused_naming_the_field(lm_server, body, name, value):
    method, path, valid = ENDPOINTS[body]
    response = requests.request(method, f"{lm_server.url}{path}", json={**valid, name: value}, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == name and error["message"].startswith(name), error


def test_the_top_k_of_the_report(lm_server):
    response = requests.put(f"{lm_server.url}/generate", json={"sentences": ["hi"], "top_k": 1e30})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "top_k must be <= 1048576, got 1e+30"


def test_integral_floats_are_integers_and_strings_are_not_numbers(lm_server):
    ok = requests.put(f"{lm_server.url}/generate", json={"sentences": ["hi"], "tokens_to_generate": 2.0})
    assert ok.status_code == 200
    for field, value, words in (("tokens_to_generate", 2.5, "an integer"), ("temperature", "0.5", "a number"),
                                ("greedy", 1, "true or false")):
        response = requests.put(f"{lm_server.url}/generate", json={"sentences": ["hi"], field: value})
        assert response.json()["error"]["message"].startswith(f"{field} must be {words}, got"), response.text


def test_nested_fields_are_named_by_their_path(lm_server):
    messages = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]
    response = requests.post(f"{lm_server.url}/v1/chat/completions", json={"messages": messages})
    error = response.json()["error"]
    assert error["param"] == "messages" and error["message"].startswith("messages[1].role must be 'system'")
