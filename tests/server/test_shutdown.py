"""A real `nemotron serve` process: client disconnects are normal (499, no error in the log), and
SIGTERM drains (new requests 503, /health "draining", streams cut at the deadline end with an
error event and [DONE], exit status 0)."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time

import requests

from tests.server.test_serve_command import free_port, start

STREAM = {"prompt": "The cat", "max_tokens": 240, "ignore_eos": True, "stream": True}


def wait_ready(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def send_raw(port: int, head: str, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def post_head(path: str, port: int, length: int) -> str:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n")


def requests_by_status(url: str, endpoint: str) -> dict[int, int]:
    counts = {}
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        prefix = f'nemotron_requests_total{{endpoint="{endpoint}",status="'
        if line.startswith(prefix):
            counts[int(line[len(prefix):].split('"')[0])] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def test_disconnects_are_499_and_no_error(tiny_model_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(tiny_model_dir, port, "--log-level", "info")
    try:
        wait_ready(process, url)
        body = json.dumps(STREAM).encode()
        streams = [send_raw(port, post_head("/v1/completions", port, len(body)), body) for _ in range(6)]
        for sock in streams:  # a first event arrived: the stream is running; then the client goes away
            assert b"data: " in sock.recv(4096) or b"data: " in sock.recv(4096)
            sock.close()
        waiting = json.dumps({**STREAM, "stream": False}).encode()
        sock = send_raw(port, post_head("/v1/completions", port, len(waiting)), waiting)
        time.sleep(0.2)
        sock.close()
        for _ in range(3):  # gone in the middle of the body
            send_raw(port, post_head("/v1/completions", port, 1000), b'{"prompt": "The').close()
        deadline = time.monotonic() + 30
        while sum(requests_by_status(url, "/v1/completions").values()) < 10:
            assert time.monotonic() < deadline, requests_by_status(url, "/v1/completions")
            time.sleep(0.1)
        counts = requests_by_status(url, "/v1/completions")
        assert set(counts) <= {200, 499} and counts[499] >= 4, counts  # a stream may have ended first
        assert requests.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=60)
    assert "Traceback" not in log and "ERROR" not in log and "Exception" not in log, log


def test_sigterm_drains(tiny_model_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # One sequence at a time: 24 streams of 240 tokens take longer than the 2 s drain.
    process = start(tiny_model_dir, port, "--log-level", "info", "--max-num-seqs", "1", "--shutdown-timeout", "2")
    texts: list[str] = []
    try:
        wait_ready(process, url)
        first = threading.Event()

        def stream() -> None:
            with requests.post(f"{url}/v1/completions", json=STREAM, stream=True, timeout=60) as response:
                chunks = []
                for chunk in response.iter_content(None):
                    chunks.append(chunk)
                    first.set()
                texts.append(b"".join(chunks).decode())

        clients = [threading.Thread(target=stream) for _ in range(24)]
        for client in clients:
            client.start()
        assert first.wait(60)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        deadline = signalled + 1.5
        while requests.get(f"{url}/health", timeout=5).json()["status"] != "draining":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        health = requests.get(f"{url}/health", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "draining"
        refused = requests.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=5)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
        assert refused.headers["retry-after"]
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - signalled < 2 + 13  # the drain, its 5 s grace, then a clean exit
        for client in clients:
            client.join(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        _, log = process.communicate(timeout=30)
    assert "Traceback" not in log and "ERROR" not in log, log
    assert len(texts) == 24
    cut = 0
    for text in texts:
        events = [e for e in text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]", text[-300:]
        last = json.loads(events[-2][len("data: "):])
        if "error" in last:
            assert last["error"]["code"] == "shutting_down"
            cut += 1
        else:
            assert last["choices"][0]["finish_reason"] == "length"
    assert cut >= 1
