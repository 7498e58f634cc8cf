"""/openapi.json describes what the server accepts and answers: schemathesis generates requests from
it (valid and invalid ones) against the live server and checks every answer against it."""
from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from nemotron.server.openapi import document

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
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

