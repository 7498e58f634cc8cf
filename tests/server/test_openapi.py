"""/openapi.json describes what the server accepts and answers: schemathesis generates requests from
it (valid and invalid ones) against the live server and checks every answer against it."""
from __future__ import annotations

import json

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from nemotron.server.openapi import document



def stream_events_conformance(ctx, response, case) -> bool | None:
    """Each event's data, parsed, against the schema the document gives it (schemathesis checks
    the events' framing; this their JSON)."""
    if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return None
    check_events(case.operation.path, response.text)
    return True


def check_events(path: str, text: str) -> None:
    media = document()["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
    validator = validator_for(media["schema"]["properties"]["data"]["anyOf"][1]["contentSchema"])
    events = [e for e in text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]", events[-1]
    for event in events[:-1]:
        assert event.startswith("data: ")
        validator.validate(json.loads(event[len("data: "):]))


def validator_for(schema: dict):
    return jsonschema_rs.validator_for({**document(), **schema})  # its $refs point into the document


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          stream_events_conformance]
OPERATIONS = [("PUT", "/generate"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
              ("GET", "/v1/models"), ("GET", "/health")]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}


@pytest.fixture(scope="module")
def api_schema(lm_server):
    return schemathesis.openapi.from_url(f"{lm_server.url}/openapi.json")


@pytest.mark.parametrize("method, path, mode", [
    (method, path, mode) for method, path in OPERATIONS for mode in EXAMPLES
    if mode == GenerationMode.POSITIVE or method != "GET"])  # GETs take no input to get wrong
def test_answers_conform_to_the_schema(api_schema, lm_server, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES[mode], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def call(case):
        case.call_and_validate(base_url=lm_server.url, checks=CHECKS, timeout=60)

    call()


def test_the_document_describes_both_apis(lm_server):
    served = requests.get(f"{lm_server.url}/openapi.json").json()
    assert served == document()
    assert {"/generate", "/v1/completions", "/v1/chat/completions", "/v1/models"} <= set(served["paths"])
    generate = served["components"]["schemas"]["GenerateBody"]["properties"]
    assert generate["tokens_to_generate"]["default"] == 64 and generate["top_p"]["default"] == 0.9



@pytest.mark.parametrize("method, path, body", [
    ("PUT", "/generate", {"sentences": ["The cat", "A"], "tokens_to_generate": 3, "compute_logprob": True}),
    ("PUT", "/generate", {"sentences": ["The cat"], "tokens_to_generate": 2, "compute_logprob": True,
                          "all_probs": True}),
    ("POST", "/v1/completions", {"prompt": ["The cat", "A"], "max_tokens": 3, "n": 2, "logprobs": 2, "echo": True}),
    ("POST", "/v1/completions", {"prompt": "The cat", "max_tokens": 3, "logprobs": 2, "stream": True,
                                 "stream_options": {"include_usage": True}}),
    ("POST", "/v1/completions", {"prompt": "The cat", "max_tokens": 300, "stream": True}),  # a 400
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                                      "logprobs": True, "top_logprobs": 2}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "n": 2,
                                      "logprobs": True, "stream": True, "stream_options": {"include_usage": True}}),
    ("GET", "/v1/models", None), ("GET", "/health", None)])
def test_known_answers_conform(lm_server, method, path, body):
    """Every kind of answer, whatever the generated examples happened to reach."""
    response = requests.request(method, f"{lm_server.url}{path}", json=body, timeout=60)
    if response.headers["content-type"].startswith("text/event-stream"):
        assert response.status_code == 200
        check_events(path, response.text)
        return
    described = document()["paths"][path][method.lower()]["responses"][str(response.status_code)]
    validator_for(described["content"]["application/json"]["schema"]).validate(response.json())


def test_reward_answers_conform(reward_server):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    plain = requests.post(f"{reward_server.url}/v1/chat/completions", json={"messages": messages}, timeout=60)
    validator_for({"$ref": "#/components/schemas/ChatCompletionResponse"}).validate(plain.json())
    stream = requests.post(f"{reward_server.url}/v1/chat/completions", json={"messages": messages, "stream": True})
    check_events("/v1/chat/completions", stream.text)
