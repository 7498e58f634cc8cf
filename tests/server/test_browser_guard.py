"""A web page cannot drive a local server: foreign Host names (DNS rebinding) are refused, JSON
endpoints take only application/json (a cross-site page cannot send that without a CORS preflight),
and CORS is off unless origins are given."""
from __future__ import annotations

import http.client
import json

import pytest
import requests

from nemotron.checkpoint.load import load_model
from tests.server.conftest import start_server

BODY = json.dumps({"sentences": ["hi"], "tokens_to_generate": 1})


def raw_request(server, method: str, path: str, headers: dict, body: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(method, path, body, {"Host": f"127.0.0.1:{server.port}", **headers})
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


@pytest.mark.parametrize("host, served", [
    ("127.0.0.1:{port}", True), ("localhost:{port}", True), ("LOCALHOST", True), ("[::1]:{port}", True),
    ("10.1.2.3:{port}", True), ("attacker.example:{port}", False), ("localhost.attacker.example", False),
    ("127.0.0.1.nip.io:{port}", False)])
def test_only_ip_addresses_and_allowed_names_are_served(lm_server, host, served):
    for method, path, body in (("GET", "/health", None), ("PUT", "/generate", BODY)):
        response = raw_request(lm_server, method, path, {"Host": host.format(port=lm_server.port),
                                                         "Content-Type": "application/json"}, body)
        assert (response.status == 200) == served, (host, path, response.status, response.body)
        if not served:
            assert response.status == 403 and b"--allowed-hosts" in response.body


def test_json_endpoints_take_only_json(lm_server):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": content_type} if content_type else {}
        for method, path in (("PUT", "/generate"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")):
            response = raw_request(lm_server, method, path, headers, BODY)
            assert response.status == 415, (content_type, path, response.body)
            assert json.loads(response.body)["error"]["code"] == "unsupported_media_type"
    charset = raw_request(lm_server, "PUT", "/generate", {"Content-Type": "Application/JSON; charset=utf-8"}, BODY)
    assert charset.status == 200
    # The model card's readiness probe (curl -X PUT http://host:port) sends no body and no type.
    assert raw_request(lm_server, "PUT", "/", {}).status == 200


def test_foreign_origins_are_refused_and_the_server_itself_is_not(lm_server):
    json_type = {"Content-Type": "application/json"}
    for origin in ("https://attacker.example", "null", "http://localhost:1"):
        response = raw_request(lm_server, "PUT", "/generate", {**json_type, "Origin": origin}, BODY)
        assert response.status == 403 and json.loads(response.body)["error"]["code"] == "origin_not_allowed"
    same = raw_request(lm_server, "PUT", "/generate", {**json_type, "Origin": f"http://127.0.0.1:{lm_server.port}"},
                       BODY)  # the playground's own requests
    assert same.status == 200


def test_cors_is_off_by_default(lm_server):
    preflight = raw_request(lm_server, "OPTIONS", "/v1/chat/completions", {
        "Origin": "https://attacker.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.getheader("access-control-allow-origin") is None
    response = raw_request(lm_server, "GET", "/v1/models", {"Origin": "https://attacker.example"})
    assert response.getheader("access-control-allow-origin") is None


def test_cors_origins_and_allowed_hosts(tiny_model_dir):
    server = start_server(lambda: load_model(tiny_model_dir, dtype="float32"), allowed_hosts=("gpu-box.lan",),
                          cors_origins=("https://app.example",))
    try:
        allowed = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                   "Access-Control-Request-Headers": "content-type, authorization"}
        preflight = raw_request(server, "OPTIONS", "/v1/chat/completions", allowed)
        assert preflight.status == 200 and preflight.getheader("access-control-allow-origin") == "https://app.example"
        other = raw_request(server, "OPTIONS", "/v1/chat/completions", {**allowed, "Origin": "https://else.example"})
        assert other.status == 403 and other.getheader("access-control-allow-origin") is None
        call = requests.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 1},
                             headers={"Origin": "https://app.example"})
        assert call.status_code == 200 and call.headers["access-control-allow-origin"] == "https://app.example"
        named = raw_request(server, "GET", "/health", {"Host": f"gpu-box.lan:{server.port}"})
        assert named.status == 200
        assert raw_request(server, "GET", "/health", {"Host": "localhost"}).status == 200
        assert raw_request(server, "GET", "/health", {"Host": "other.lan"}).status == 403
    finally:
        server.stop()
