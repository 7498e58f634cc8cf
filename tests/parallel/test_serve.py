"""`nemotron serve --tp/--pp` as users start it: the same answers as one process through the model
card's `requests.put` and the `openai` client; a rank that dies or hangs mid-request gets that request
a 503 and ends the server with a non-zero exit, within the collective timeout."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import openai
import pytest
import requests
import torch

from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig
from nemotron.engine.sampling import SamplingParams
from tests.server.test_serve_command import CARD_PROMPT, CARD_REQUEST, free_port

START_TIMEOUT_S = 120


def serve(model_dir, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "nemotron", "serve", str(model_dir), "--port", str(port),
                                "--dtype", "float32", "--device", "cpu", "--log-level", "warning", *options],
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the server did not become ready"
        try:
            if requests.put(url, timeout=5).status_code == 200:  # the model card's readiness probe
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def test_tp2_pp2_serves_the_model_card_client_and_openai(scripted_model_dir):
    prompt = list(range(40, 60))
    one = LLM(str(scripted_model_dir), EngineConfig(num_blocks=64), dtype="float32", device="cpu")
    expected = one.generate([prompt], SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))[0].outputs[0].token_ids
    process, url = serve(scripted_model_dir, "--tp", "2", "--pp", "2")
    try:
        data = CARD_REQUEST
        response = requests.put(f"{url}/generate", data=json.dumps(data),
                                headers={"Content-Type": "application/json"}).json()["sentences"][0]
        assert response[len(CARD_PROMPT):] == "Hi.\n<extra_id_1>"
        scored = requests.put(f"{url}/generate", json={**data, "compute_logprob": True}).json()
        assert len(scored["logprob"][0]) == len(scored["tokens"][0]) - 1  # prompt and output log-probabilities
        full = requests.put(f"{url}/generate", json={**data, "compute_logprob": True, "all_probs": True}).json()
        assert full["logprob"][0] == pytest.approx(scored["logprob"][0], abs=1e-4)
        assert len(full["full_logprob"][0]) == len(scored["logprob"][0])

        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        chat = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Write a poem"}],
                                              temperature=0)
        assert chat.choices[0].message.content == "Hi."
        completion = client.completions.create(model="x", prompt=prompt, max_tokens=12, temperature=0,
                                               logprobs=1, extra_body={"ignore_eos": True})
        echoed = client.completions.create(model="x", prompt=prompt, max_tokens=1, temperature=0, logprobs=2, echo=True)
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model="x", prompt=prompt, max_tokens=12, temperature=0, stream=True, extra_body={"ignore_eos": True}))
    finally:
        code, err = stop(process)
    assert completion.choices[0].text == one.tokenizer.decode(expected) == streamed
    ids = prompt + expected[:1]
    with torch.no_grad():  # a plain forward pass over the whole sequence
        reference = one.loaded.model(torch.tensor([ids]))[0, :-1].float().log_softmax(-1)  # (T-1, V)
    chosen = reference.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
    assert echoed.choices[0].logprobs.token_logprobs[1:] == pytest.approx(chosen, abs=1e-4)
    assert code == 130, err  # Ctrl-C: a clean stop of every rank
    assert "tensor parallel 2 x pipeline parallel 2" in err


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["dies", "hangs"])
def test_a_rank_lost_mid_request_gets_503_and_a_nonzero_exit(scripted_model_dir, fault):
    timeout_s = 6
    process, url = serve(scripted_model_dir, "--tp", "2", "--dist-timeout", str(timeout_s))
    worker = int(subprocess.run(["pgrep", "-P", str(process.pid), "-f", "spawn_main"], capture_output=True,
                                text=True).stdout.split()[0])
    answer: list[requests.Response] = []
    body = {"sentences": ["a b c"], "tokens_to_generate": 240, "min_tokens_to_generate": 240, "end_strings": [],
            "greedy": True}
    thread = threading.Thread(target=lambda: answer.append(requests.put(f"{url}/generate", json=body, timeout=120)))
    try:
        thread.start()
        deadline = time.monotonic() + 30
        while "nemotron_requests_running 1" not in requests.get(f"{url}/metrics", timeout=5).text:
            assert time.monotonic() < deadline and thread.is_alive(), "the request never started"
        os.kill(worker, fault)
        began = time.monotonic()
        thread.join(timeout=timeout_s + 45)
        _, err = process.communicate(timeout=timeout_s + 45)
        took = time.monotonic() - began
    finally:
        if process.poll() is None:
            process.kill()
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert answer and answer[0].status_code == 503, (answer and answer[0].text, err)
    assert process.returncode == 2 and took < timeout_s + 30, (process.returncode, took, err)
    assert "rank" in err.splitlines()[-1], err


def test_a_reward_model_over_pipeline_stages_scores_as_one_process(tiny_reward_dir):
    from tests.server.test_reward_api import CONVERSATION, reference_scores

    process, url = serve(tiny_reward_dir, "--pp", "2")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        choice = client.chat.completions.create(messages=CONVERSATION, model="x").choices[0]
    finally:
        code, err = stop(process)
    scores = {k: float(v) for k, v in (item.split(":") for item in choice.message.content.split(","))}
    assert scores == pytest.approx(reference_scores(tiny_reward_dir, CONVERSATION), abs=1e-5)
    assert code == 130, err
