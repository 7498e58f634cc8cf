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


@pytest.mark.parametrize("body", list(ENDPOINTS))
def test_an_unknown_field_is_refused_in_openais_words(lm_server, body):
    """A misspelt knob (max_token) would otherwise be dropped without a word."""
    method, path, valid = ENDPOINTS[body]
    for extra, name in (({"max_token": 3}, "max_token"), ({"neighbors": 2}, "neighbors")):
        response = requests.request(method, f"{lm_server.url}{path}", json={**valid, **extra}, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"] == f"Unrecognized request argument supplied: {name}"
    messages = [{"role": "user", "content": "hi", "mood": "happy"}]
    response = requests.post(f"{lm_server.url}/v1/chat/completions", json={"messages": messages}, timeout=30)
    assert response.json()["error"]["message"] == "Unrecognized request argument supplied: messages[0].mood"


def test_openai_fields_that_ask_for_nothing_more_are_accepted(lm_server):
    """What the openai client and SDKs send that this server needs nothing for: metadata, tiers, no-op
    tool choices, a received assistant message passed back as it came."""
    assistant = {"role": "assistant", "content": "Hello.", "refusal": None, "tool_calls": None, "annotations": [],
                 "function_call": None, "audio": None}
    body = {"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}, assistant,
                         {"role": "user", "content": "and?"}],
            "max_tokens": 2, "metadata": {"run": "7"}, "service_tier": "auto", "tool_choice": "none",
            "parallel_tool_calls": False, "modalities": ["text"], "store": False, "user": "me"}
    response = requests.post(f"{lm_server.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    for extra, message in (({"tool_choice": "required"}, "tool_choice must be 'none' or 'auto'"),
                           ({"store": True}, "store is not supported"),
                           ({"modalities": ["audio"]}, "modalities[0] must be 'text'"),
                           ({"stream_options": {"include_usage": True}}, "stream_options is only allowed when stream")):
        response = requests.post(f"{lm_server.url}/v1/chat/completions", json={**body, **extra}, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["message"].startswith(message), response.text


@pytest.mark.parametrize("content, message", [
    ({"text": "hi"}, 'messages[0].content must be a string or a list of {"type": "text", "text": ...} parts, '
                     'got {"text": "hi"}'),
    ([{"type": "text", "text": 5}], "messages[0].content[0].text must be a string, got 5"),
])
def test_a_malformed_message_content_is_named_where_it_is_wrong(lm_server, content, message):
    response = requests.post(f"{lm_server.url}/v1/chat/completions",
                             json={"messages": [{"role": "user", "content": content}]}, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["message"] == message


def test_vllm_extras_at_what_this_server_does_are_accepted(lm_server):
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    url = f"{lm_server.url}/v1/chat/completions"
    for extra in ({"skip_special_tokens": False}, {"add_generation_prompt": True},
                  {"stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": False}}):
        assert requests.post(url, json={**chat, **extra}, timeout=60).status_code == 200, extra
    for extra, message in (({"skip_special_tokens": True}, "skip_special_tokens is not supported"),
                           ({"add_generation_prompt": False}, "add_generation_prompt false is not supported"),
                           ({"stream": True, "stream_options": {"continuous_usage_stats": True}},
                            "stream_options.continuous_usage_stats is not supported")):
        response = requests.post(url, json={**chat, **extra}, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["message"].startswith(message), response.text
