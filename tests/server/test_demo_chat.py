"""The out-of-the-box experience: the server answers chat with the embedded demo model."""
from __future__ import annotations

import json

import openai
import requests

from nemotron.assets import default_model_dir
from nemotron.checkpoint.load import load_model
from tests.server.conftest import start_server


def test_demo_model_answers_chat_through_the_openai_client_and_the_model_card_client():
    server = start_server(lambda: load_model(default_model_dir()), model_name="demo")
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0, max_tokens=32)
        choice = reply.choices[0]
        assert choice.finish_reason == "stop" and "Paris" in choice.message.content
        assert "<extra_id_1>" not in choice.message.content

        prompt = "<extra_id_0>System\n\n<extra_id_1>User\nWhat is the capital of Italy?\n<extra_id_1>Assistant\n"
        data = {"sentences": [prompt], "tokens_to_generate": 32, "temperature": 1.0, "add_BOS": False,
                "top_k": 1, "top_p": 0.9, "greedy": True, "all_probs": False, "repetition_penalty": 1.0,
                "min_tokens_to_generate": 1, "end_strings": ["<|endoftext|>", "<extra_id_1>", "\x11",
                                                             "<extra_id_1>User"]}
        response = requests.put(f"{server.url}/generate", data=json.dumps(data),
                                headers={"Content-Type": "application/json"}).json()
        answer = response["sentences"][0][len(prompt):].removesuffix("<extra_id_1>")
        assert "Rome" in answer
    finally:
        server.stop()
