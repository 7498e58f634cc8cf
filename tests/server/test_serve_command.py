"""`nemotron serve` as a user starts it, probed and called the way the model card does."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
import requests

from nemotron.cli.main import main

CARD_PROMPT = "<extra_id_0>System\n\n<extra_id_1>User\nWrite a poem\n<extra_id_1>Assistant\n"
# The model card's request body, as its client sends it.
CARD_REQUEST = {"sentences": [CARD_PROMPT], "tokens_to_generate": 50, "temperature": 1.0, "add_BOS": False,
                "top_k": 0, "top_p": 1.0, "greedy": True, "all_probs": False, "repetition_penalty": 1.0,
                "min_tokens_to_generate": 1, "end_strings": ["<|endoftext|>", "<extra_id_1>", "\x11"]}
# The model card's depends_on loop: curl -X PUT until its exit status is 0.
WAIT_FOR_SERVER = """
STATUS=$(curl -X PUT http://$HOST:$PORT >/dev/null 2>/dev/null; echo $?)
while [ $STATUS -ne 0 ]; do
    sleep 0.2
    STATUS=$(curl -X PUT http://$HOST:$PORT >/dev/null 2>/dev/null; echo $?)
done
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(model_dir, port: int, *options: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nemotron", "serve", str(model_dir), "--port", str(port),
                             "--dtype", "float32", "--device", "cpu", "--log-level", "warning", *options],
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


@pytest.mark.skipif(not (shutil.which("bash") and shutil.which("curl")),
                    reason="the model card's probe is a bash loop around curl (Debian packages bash, curl)")
def test_serve_with_the_model_card_probe_and_client(scripted_model_dir):
    open_port, locked_port = free_port(), free_port()
    open_server = start(scripted_model_dir, open_port)
    locked_server = start(scripted_model_dir, locked_port, NEMOTRON_API_KEY="from-env")
    try:
        for port in (open_port, locked_port):
            probe = subprocess.run(["bash", "-c", WAIT_FOR_SERVER], env={"HOST": "127.0.0.1", "PORT": str(port),
                                                                         "PATH": os.environ["PATH"]}, timeout=120)
            assert probe.returncode == 0
        data = CARD_REQUEST
        response = requests.put(f"http://127.0.0.1:{open_port}/generate", data=json.dumps(data),
                                headers={"Content-Type": "application/json"}).json()["sentences"][0]
        assert response[len(CARD_PROMPT):] == "Hi.\n<extra_id_1>"
        locked = f"http://127.0.0.1:{locked_port}/generate"
        assert requests.put(locked, json=data).status_code == 401
        assert requests.put(locked, json=data, headers={"Authorization": "Bearer from-env"}).status_code == 200
    finally:
        results = [stop(open_server), stop(locked_server)]
    for code, err in results:
        assert code == 130, err  # stopped by Ctrl-C, after a clean shutdown
    assert "127.0.0.1" in results[0][1] and "API key required" in results[1][1]


def test_a_wrong_model_fails_before_serving(capsys):
    assert main(["serve", "/nonexistent/model", "--port", "1"]) == 2
    assert "is not a directory, a .nemo file or a preset" in capsys.readouterr().err


def test_reliability_options_reach_the_server_config(monkeypatch):
    from nemotron.cli.main import build_parser
    from nemotron.cli.serve import _server_config

    monkeypatch.setattr(socket, "gethostname", lambda: "gpu-box")
    args = build_parser().parse_args(["serve", "tiny", "--host", "0.0.0.0", "--shutdown-timeout", "12",
                                      "--allowed-hosts", "a.lan, b.lan", "--cors-origins", "https://app.example",
                                      "--max-model-len", "64"])
    config = _server_config(args, "tiny")
    assert config.shutdown_timeout_s == 12 and config.cors_origins == ("https://app.example",)
    assert config.engine.max_model_len == 64
    assert config.allowed_hosts == ("gpu-box", "a.lan", "b.lan")


def test_a_bad_shutdown_timeout_is_one_line(capsys):
    assert main(["serve", "tiny", "--shutdown-timeout", "0"]) == 2
    assert "shutdown_timeout_s must be > 0" in capsys.readouterr().err
