"""Readiness while the model loads, load failures, and the Prometheus metrics."""
from __future__ import annotations

import re
import threading

import requests

from nemotron.checkpoint.load import load_model
from nemotron.errors import CheckpointError
from nemotron.server import ServerConfig, create_app
from tests.server.conftest import LiveServer
from tests.server.test_nemo_api import readiness_probe


def test_not_ready_until_loaded_and_early_requests_wait(tiny_model_dir):
    release = threading.Event()

    def load():
        release.wait(30)
        return load_model(tiny_model_dir, dtype="float32")

    server = LiveServer(create_app(load, ServerConfig(model_name="tiny"))).start(wait_ready=False)
    try:
        health = requests.get(f"{server.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        assert "nemotron_ready 0" in requests.get(f"{server.url}/metrics").text
        assert readiness_probe("127.0.0.1", server.port) == 0  # the model card's probe only needs an answer
        early: list[requests.Response] = []
        waiting = threading.Thread(target=lambda: early.append(requests.put(
            f"{server.url}/generate", json={"sentences": ["hi"], "tokens_to_generate": 3})))
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive()  # held until the model is there
        release.set()
        waiting.join(30)
        assert early[0].status_code == 200 and early[0].json()["sentences"][0].startswith("hi")
        assert requests.get(f"{server.url}/health").json() == {"status": "ready", "model": "tiny"}
    finally:
        release.set()
        server.stop()


def test_a_failed_load_is_reported(tmp_path):
    failures = []

    def load():
        raise CheckpointError(f"{tmp_path} has neither config.json nor model_config.yaml")

    server = LiveServer(create_app(load, ServerConfig(), on_load_error=failures.append)).start(wait_ready=False)
    try:
        for _ in range(200):
            if requests.get(f"{server.url}/health").json()["status"] != "loading":
                break
        health = requests.get(f"{server.url}/health")
        assert health.status_code == 503 and "neither config.json" in health.json()["error"]
        completion = requests.post(f"{server.url}/v1/completions", json={"prompt": "hi"})
        assert completion.status_code == 503 and "failed to load" in completion.json()["error"]["message"]
        assert isinstance(failures[0], CheckpointError)
    finally:
        server.stop()


SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')


def test_metrics_in_prometheus_text_format(lm_server):
    before = metric(lm_server, 'nemotron_requests_total{endpoint="/v1/completions",status="200"}')
    tokens_before = metric(lm_server, 'nemotron_generation_tokens_total{endpoint="/v1/completions"}')
    body = requests.post(f"{lm_server.url}/v1/completions", json={"prompt": "The cat", "max_tokens": 5,
                                                                  "ignore_eos": True}).json()
    assert body["usage"]["completion_tokens"] == 5
    text = requests.get(f"{lm_server.url}/metrics").text
    for line in text.strip().split("\n"):
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE.match(line), line
    assert metric(lm_server, 'nemotron_requests_total{endpoint="/v1/completions",status="200"}') == before + 1
    assert metric(lm_server, 'nemotron_generation_tokens_total{endpoint="/v1/completions"}') == tokens_before + 5
    for name in ("nemotron_requests_waiting", "nemotron_requests_running", "nemotron_kv_blocks_used",
                 "nemotron_kv_blocks_free", 'nemotron_request_duration_seconds_count{endpoint="/v1/completions"}',
                 'nemotron_time_to_first_token_seconds_bucket{endpoint="/v1/completions",le="+Inf"}'):
        assert metric(lm_server, name) is not None, name
    assert metric(lm_server, "nemotron_kv_blocks_used") + metric(lm_server, "nemotron_kv_blocks_free") == \
        metric(lm_server, "nemotron_kv_blocks_total")


def metric(server, name: str) -> float | None:
    for line in requests.get(f"{server.url}/metrics").text.split("\n"):
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0 if "_total{" in name else None
