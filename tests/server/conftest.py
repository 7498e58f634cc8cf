"""Live servers on 127.0.0.1 (uvicorn on a thread, a free port) around tiny models: random ones,
and a "scripted" one whose greedy continuation is known in advance."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import requests
import torch
import uvicorn

from nemotron.checkpoint.load import load_model
from nemotron.engine.llm_engine import EngineConfig
from nemotron.model.nemotron import build_model, init_random_weights
from nemotron.server import ServerConfig, create_app
from tests.conftest import TINY_CONFIG, write_model_dir

# The scripted model's greedy next token depends only on the current one (see scripted_model_dir).
# With the test tokenizer, a chat prompt (and the model card's template) ends in the piece "t":
# the reply is "Hi.", then the template's newline (a byte piece) and <extra_id_1>, as the Instruct
# model ends its turns. A prompt ending in "D" continues "B" and then EOS.
T, H, I, DOT, NEWLINE, EXTRA_ID_1, D, B, EOS = 283, 313, 284, 291, 17, 5, 318, 302, 3
SCRIPT = {T: H, H: I, I: DOT, DOT: NEWLINE, NEWLINE: EXTRA_ID_1, EXTRA_ID_1: H, D: B, B: EOS}


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """The tiny models gain nothing from intra-op threads, and on a busy machine two threads waiting
    for each other make every step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LiveServer:
    """uvicorn serving `app` on a thread; `url` once the port accepts connections."""

    def __init__(self, app) -> None:
        self.app = app
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it
        # every response on a kept-alive connection waits ~40 ms for a delayed ACK (Nagle).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # loop="asyncio": the loop `nemotron serve` runs on (uvicorn's "auto" would take uvloop).
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2,
                                                    loop="asyncio"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def state(self):
        return self.app.state.server

    @property
    def engine(self):
        return self.state.model.llm.engine

    def start(self, wait_ready: bool = True) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        if wait_ready:
            while requests.get(f"{self.url}/health", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the model did not become ready"
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def all_kv_blocks_free(self, timeout: float = 10.0) -> bool:
        """Aborts reach the engine thread asynchronously, so wait a little for them."""
        engine = self.engine
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if engine.blocks.num_free_blocks == engine.blocks.num_blocks and engine.num_requests == 0:
                return True
            time.sleep(0.02)
        return False


def start_server(model, **config) -> LiveServer:
    config.setdefault("model_name", "tiny")
    config.setdefault("engine", EngineConfig(num_blocks=1024, max_num_seqs=128))
    return LiveServer(create_app(model, ServerConfig(**config))).start()


@pytest.fixture(scope="session")
def lm_server(tiny_model_dir):
    server = start_server(lambda: load_model(tiny_model_dir, dtype="float32"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def scripted_model_dir(tmp_path_factory, sp_tokenizer_file) -> Path:
    """Layers that add nothing (o_proj and down_proj zero), so the last hidden state is the final
    norm of the current token's embedding; the output layer then maps each token of SCRIPT to its
    successor by a wide margin. Other tokens continue at random."""
    model = build_model(TINY_CONFIG)
    init_random_weights(model, seed=3, std=0.1)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.norm(model.model.embed_tokens.weight)  # (V, H): what the head sees
        for current, following in SCRIPT.items():
            model.lm_head.weight[following] += 4.0 * embeddings[current] / embeddings[current].norm()
        predicted = model.lm_head(embeddings).argmax(-1)
    assert all(int(predicted[c]) == f for c, f in SCRIPT.items()), "the script did not take"
    return write_model_dir(model, TINY_CONFIG, tmp_path_factory.mktemp("scripted"), sp_tokenizer_file)


@pytest.fixture(scope="session")
def scripted_server(scripted_model_dir):
    server = start_server(lambda: load_model(scripted_model_dir, dtype="float32"), model_name="scripted")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def reward_server(tiny_reward_dir):
    server = start_server(lambda: load_model(tiny_reward_dir, dtype="float32"), model_name="tiny-reward")
    yield server
    server.stop()


def slow_loader(model_dir: Path, seconds_per_step: float):
    """A real model whose every forward pass takes at least `seconds_per_step` (timeouts, disconnects)."""
    def load():
        loaded = load_model(model_dir, dtype="float32")
        loaded.model.model.register_forward_hook(lambda *_: time.sleep(seconds_per_step))
        return loaded
    return load
