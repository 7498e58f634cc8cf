"""A huge prompt is refused before it is tokenized, and the server keeps answering meanwhile:
request CPU work (parsing, tokenizing, rendering) runs off the event loop."""
from __future__ import annotations

import json
import threading
import time

import requests

HUGE = "the cat sat on the mat. " * (15_000_000 // 24)  # 15 MB, under the 16 MB body limit
JSON = {"Content-Type": "application/json"}


def test_health_answers_while_a_huge_prompt_is_refused(lm_server):
    body = json.dumps({"prompt": HUGE, "max_tokens": 1}).encode()  # not in the client thread: one process
    # The slowest /health answer while the prompt is sent and refused; the best of three tries, as
    # other processes on a busy machine can stall any thread for a while.
    slowest = min(slowest_health_while(lm_server, body) for _ in range(3))
    assert slowest < 0.1


def slowest_health_while(lm_server, body: bytes) -> float:
    answers = {}

    def send() -> None:
        answers["big"] = requests.post(f"{lm_server.url}/v1/completions", data=body, headers=JSON, timeout=120)

    health = requests.Session()
    health.get(f"{lm_server.url}/health")  # connected
    sender = threading.Thread(target=send)
    started = time.perf_counter()
    sender.start()
    latencies = []
    while sender.is_alive() or not latencies:
        begin = time.perf_counter()
        assert health.get(f"{lm_server.url}/health", timeout=10).status_code == 200
        latencies.append(time.perf_counter() - begin)
    elapsed = time.perf_counter() - started
    big = answers["big"]
    assert big.status_code == 400 and big.json()["error"]["param"] == "prompt"
    assert f"prompt has {len(HUGE)} characters; at most" in big.json()["error"]["message"]
    assert elapsed < 10  # tokenizing it would take about 8 s on a quiet machine, before the context check
    return max(latencies)


def test_every_prompt_field_is_prechecked(lm_server):
    long = "word " * 100_000
    for method, path, body, param in (
            ("PUT", "/generate", {"sentences": ["hi", long]}, "sentences[1]"),
            ("POST", "/v1/completions", {"prompt": ["hi", long]}, "prompt[1]"),
            ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": long}]}, "messages")):
        response = requests.request(method, f"{lm_server.url}{path}", json=body, timeout=60)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
        assert "can fit the model's context of 256 tokens" in response.json()["error"]["message"]
