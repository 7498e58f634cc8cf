"""The server on a Nemotron-H checkpoint (byte-level BPE tokenizer.json): the OpenAI client, streaming,
the model card's PUT /generate, and the Mamba state slots all back once requests end."""
from __future__ import annotations

import openai
import pytest
import requests
import torch

from nemotron.checkpoint.load import load_model
from nemotron.engine.generate import generate
from nemotron.engine.sampling import SamplingParams
from nemotron.model.nemotron_h import NemotronHForCausalLM
from tests.server.conftest import start_server

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory):
    from tests.engine.test_hybrid_engine import HYBRID_SHAPES, write_hybrid_dir

    directory = tmp_path_factory.mktemp("nemotron_h_server")
    write_hybrid_dir(directory, HYBRID_SHAPES[1], seed=12)
    return directory


@pytest.fixture(scope="module")
def hybrid_server(hybrid_dir):
    server = start_server(lambda: load_model(hybrid_dir, dtype="float32"))
    yield server
    server.stop()


def test_openai_and_put_generate_on_a_hybrid_model(hybrid_server, hybrid_dir):
    loaded = load_model(hybrid_dir, dtype="float32")
    assert isinstance(loaded.model, NemotronHForCausalLM)
    prompt = "The quick brown fox"
    ids = loaded.tokenizer.encode(prompt)
    expected = generate(loaded.model, loaded.tokenizer, ids, SamplingParams(max_tokens=12, temperature=0)).text

    oai = openai.OpenAI(base_url=f"{hybrid_server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    completion = oai.completions.create(model="x", prompt=prompt, max_tokens=12, temperature=0, logprobs=2)
    assert completion.choices[0].text == expected
    assert len(completion.choices[0].logprobs.top_logprobs) == completion.usage.completion_tokens
    streamed = "".join(c.choices[0].text for c in oai.completions.create(
        model="x", prompt=prompt, max_tokens=12, temperature=0, stream=True) if c.choices)
    assert streamed == expected
    chat = oai.chat.completions.create(model="x", messages=[{"role": "user", "content": "hello world"}],
                                       max_tokens=8, temperature=0.7, seed=3)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens >= 1

    echoed = oai.completions.create(model="x", prompt=prompt, max_tokens=1, temperature=0, echo=True, logprobs=0)
    scored = echoed.choices[0].logprobs.token_logprobs[:len(ids)]  # the prompt's tokens, scored by the model
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids]))[0].log_softmax(-1)
    assert scored[0] is None
    assert scored[1:] == pytest.approx([logits[i, ids[i + 1]].item() for i in range(len(ids) - 1)], abs=1e-4)

    body = requests.put(f"{hybrid_server.url}/generate", json={"sentences": [prompt], "tokens_to_generate": 12,
                                                               "greedy": True, "end_strings": []}, timeout=60).json()
    assert body["sentences"][0] == prompt + expected

    assert hybrid_server.all_kv_blocks_free()
    engine = hybrid_server.engine
    assert engine.state_slots.num_free == engine.state_slots.num_slots
    metrics = requests.get(f"{hybrid_server.url}/metrics", timeout=10).text
    assert f"state_slots_free {engine.state_slots.num_slots}" in metrics


def test_nemotron_serve_command_on_a_hybrid_checkpoint(hybrid_dir):
    """`nemotron serve DIR` as a user starts it, on the Nemotron-H directory."""
    from tests.server.test_serve_command import free_port, start, stop
    from tests.server.test_shutdown import wait_ready

    loaded = load_model(hybrid_dir, dtype="float32")
    prompt = "hello world"
    expected = generate(loaded.model, loaded.tokenizer, loaded.tokenizer.encode(prompt),
                        SamplingParams(max_tokens=6, temperature=0)).text
    port = free_port()
    server = start(hybrid_dir, port)
    try:
        wait_ready(server, f"http://127.0.0.1:{port}")
        body = requests.put(f"http://127.0.0.1:{port}/generate", json={
            "sentences": [prompt], "tokens_to_generate": 6, "greedy": True, "end_strings": []}, timeout=60).json()
        assert body["sentences"][0] == prompt + expected
    finally:
        code, err = stop(server)
    assert code == 130 and "Traceback" not in err, err  # stopped by Ctrl-C after a clean shutdown
