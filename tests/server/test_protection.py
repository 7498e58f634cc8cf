"""API key, body size, per-request timeout, and client disconnects freeing their KV blocks."""
from __future__ import annotations

import http.client
import json
import time

import openai
import pytest
import requests

from nemotron.checkpoint.load import load_model
from tests.server.conftest import slow_loader, start_server


@pytest.fixture(scope="module")
def locked_server(tiny_model_dir):
    server = start_server(lambda: load_model(tiny_model_dir, dtype="float32"), api_key="s3cret",
                          max_body_bytes=4096)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slow_server(tiny_model_dir):
    """Every forward pass takes 20 ms: a request for 150 tokens runs for 3 s or more."""
    server = start_server(slow_loader(tiny_model_dir, 0.02))
    yield server
    server.stop()


def test_api_key(locked_server):
    url = locked_server.url
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
    assert good.completions.create(model="x", prompt="hi", max_tokens=2).choices
    missing = requests.put(f"{url}/generate", json={"sentences": ["hi"]})
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]["message"]
    assert requests.put(f"{url}/generate", json={"sentences": ["hi"], "tokens_to_generate": 2},
                        headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert requests.get(f"{url}/metrics").status_code == 401
    # Probes and the page stay open: the key is typed into the page.
    assert requests.get(f"{url}/health").status_code == 200
    assert requests.put(url).status_code == 200 and requests.get(url).status_code == 200


def test_body_size_limit(locked_server):
    auth = {"Authorization": "Bearer s3cret"}
    big = {"sentences": ["x" * 5000]}
    declared = requests.put(f"{locked_server.url}/generate", json=big, headers=auth)
    assert declared.status_code == 413 and "4096 bytes" in declared.json()["error"]["message"]
    chunked = requests.put(f"{locked_server.url}/generate", data=iter([json.dumps(big).encode()]),
                           headers={**auth, "Content-Type": "application/json"})  # no Content-Length
    assert chunked.status_code == 413


def test_request_timeout_cancels_and_frees_blocks(tiny_model_dir):
    slow_server = start_server(slow_loader(tiny_model_dir, 0.02), request_timeout_s=1.0)
    try:
        check_timeouts(slow_server)
    finally:
        slow_server.stop()


def check_timeouts(slow_server) -> None:
    start = time.monotonic()
    response = requests.post(f"{slow_server.url}/v1/completions",
                             json={"prompt": "The cat", "max_tokens": 200, "ignore_eos": True})
    assert response.status_code == 408 and "1 s" in response.json()["error"]["message"]
    assert time.monotonic() - start < 4
    stream = requests.post(f"{slow_server.url}/v1/completions", stream=True,
                           json={"prompt": "The cat", "max_tokens": 200, "ignore_eos": True, "stream": True})
    events = [e for e in stream.text.split("\n\n") if e]
    assert "did not finish" in json.loads(events[-2][len("data: "):])["error"]["message"]
    assert events[-1] == "data: [DONE]"
    assert slow_server.all_kv_blocks_free()


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_aborts_and_frees_blocks(slow_server, stream):
    engine = slow_server.engine
    conn = http.client.HTTPConnection("127.0.0.1", slow_server.port)
    body = {"prompt": "The cat", "max_tokens": 150, "ignore_eos": True, "stream": stream}  # no stop string
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    deadline = time.monotonic() + 5
    while engine.blocks.num_free_blocks == engine.blocks.num_blocks:  # generating: blocks are taken
        assert time.monotonic() < deadline
        time.sleep(0.01)
    if stream:
        conn.getresponse().read1(64)  # a first chunk arrived
    conn.sock.close()  # the client goes away mid-request
    conn.close()
    assert slow_server.all_kv_blocks_free(timeout=1.5)  # long before the 150 tokens (3 s) could finish
