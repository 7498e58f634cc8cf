"""PUT /generate as NeMo's text-generation server answers it, used the way the model card does."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest
import requests
import torch

from nemotron.checkpoint.load import load_model
from nemotron.tokenizer import Tokenizer

HEADERS = {"Content-Type": "application/json"}
CARD_TEMPLATE = "<extra_id_0>System\n\n<extra_id_1>User\n{prompt}\n<extra_id_1>Assistant\n"
CARD_END_STRINGS = ["<|endoftext|>", "<extra_id_1>", "\x11", "<extra_id_1>User"]


def put(url: str, data: dict) -> requests.Response:
    return requests.put(f"{url}/generate", data=json.dumps(data), headers=HEADERS, timeout=60)


def readiness_probe(host: str, port: int) -> int:
    """The model card's `curl -X PUT http://host:port` (its exit status); a raw PUT without curl."""
    if shutil.which("curl"):
        return subprocess.run(["curl", "-X", "PUT", f"http://{host}:{port}"], capture_output=True).returncode
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"PUT / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode())
        return 0 if sock.recv(12).startswith(b"HTTP/1.1") else 7


def test_model_card_client_unchanged(scripted_server):
    assert readiness_probe("127.0.0.1", scripted_server.port) == 0

    # The model card's call_server.py, with its own parameter values (tokens to fit the tiny context).
    def text_generation(data, ip="127.0.0.1", port=None):
        resp = requests.put(f"http://{ip}:{port}/generate", data=json.dumps(data), headers=HEADERS)
        return resp.json()

    def get_generation(prompt, greedy, add_BOS, token_to_gen, min_tokens, temp, top_p, top_k, repetition,
                       batch=False):
        data = {"sentences": [prompt] if not batch else prompt, "tokens_to_generate": int(token_to_gen),
                "temperature": temp, "add_BOS": add_BOS, "top_k": top_k, "top_p": top_p, "greedy": greedy,
                "all_probs": False, "repetition_penalty": repetition, "min_tokens_to_generate": int(min_tokens),
                "end_strings": CARD_END_STRINGS}
        sentences = text_generation(data, port=scripted_server.port)["sentences"]
        return sentences[0] if not batch else sentences

    prompt = CARD_TEMPLATE.format(prompt="Write a poem on NVIDIA in the style of Shakespeare")
    response = get_generation(prompt, greedy=True, add_BOS=False, token_to_gen=100, min_tokens=1, temp=1.0,
                              top_p=1.0, top_k=0, repetition=1.0, batch=False)
    response = response[len(prompt):]
    assert response == "Hi.\n<extra_id_1>"  # the end string stays, as in NeMo; the client strips it
    if response.endswith("<extra_id_1>"):
        response = response[:-len("<extra_id_1>")]
    assert response == "Hi.\n"
    batch = get_generation([prompt, prompt + "Hi.\n<extra_id_1>User\nMore\n<extra_id_1>Assistant\n"], True, False,
                           100, 1, 1.0, 1.0, 0, 1.0, batch=True)
    assert [s.endswith("Hi.\n<extra_id_1>") for s in batch] == [True, True]


def test_response_keys_and_fields_agree(lm_server, tiny_model_dir):
    tokenizer = Tokenizer.from_dir(tiny_model_dir)
    sentences = ["The cat sees the moon", "A small bird", "Über café 😀"]
    response = put(lm_server.url, {"sentences": sentences, "tokens_to_generate": 12, "greedy": True})
    body = response.json()
    assert list(body) == ["logprob", "offsets", "sentences", "token_ids", "tokens"]  # Flask sorts the keys
    assert response.text == json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"  # and escapes non-ASCII
    assert body["logprob"] is None and "full_logprob" not in body
    for sentence, text, tokens, ids, offsets in zip(sentences, *(body[k] for k in ("sentences", "tokens",
                                                                                     "token_ids", "offsets"))):
        prompt = tokenizer.encode(sentence)
        assert ids[:len(prompt)] == prompt and 0 < len(ids) - len(prompt) <= 12
        assert text == sentence + tokenizer.decode(ids)[len(tokenizer.decode(prompt)):]
        assert tokens == [tokenizer.id_to_piece(i) for i in ids]
        assert offsets == tokenizer.offsets(ids) and len(offsets) == len(ids)


def test_defaults_follow_nemo(lm_server, tiny_model_dir):
    tokenizer = Tokenizer.from_dir(tiny_model_dir)
    body = put(lm_server.url, {"sentences": ["The river"], "greedy": True}).json()
    generated = body["token_ids"][0][len(tokenizer.encode("The river")):]
    assert len(generated) == 64 or generated[-1] == tokenizer.eos_id  # tokens_to_generate defaults to 64
    with_bos = put(lm_server.url, {"sentences": ["The river"], "greedy": True, "add_BOS": True,
                                   "tokens_to_generate": 2}).json()
    assert with_bos["token_ids"][0][0] == tokenizer.bos_id and with_bos["sentences"][0].startswith("The river")


def test_greedy_ignores_the_repetition_penalty_as_nemo(lm_server):
    data = {"sentences": ["The cat sees the moon and the"], "tokens_to_generate": 24, "greedy": True}
    plain = put(lm_server.url, data).json()["token_ids"]
    assert put(lm_server.url, {**data, "repetition_penalty": 5.0}).json()["token_ids"] == plain


@torch.no_grad()
def test_logprobs_are_those_of_a_plain_forward_pass(lm_server, tiny_model_dir):
    model = load_model(tiny_model_dir, dtype="float32").model
    data = {"sentences": ["The cat sees", "A dog runs under the tree"], "tokens_to_generate": 6,
            "compute_logprob": True, "temperature": 0.7, "top_k": 20, "random_seed": 3}
    body = put(lm_server.url, data).json()
    for ids, logprob in zip(body["token_ids"], body["logprob"]):
        reference = model(torch.tensor([ids]))[0, :-1].log_softmax(-1)  # (T-1, V)
        expected = reference.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
        torch.testing.assert_close(torch.tensor(logprob), expected, atol=1e-4, rtol=1e-4)
    probs = put(lm_server.url, {**data, "all_probs": True}).json()
    assert probs["token_ids"] == body["token_ids"]  # same seed, same sample
    for ids, logprob, full in zip(probs["token_ids"], probs["logprob"], probs["full_logprob"]):
        full = torch.tensor(full)  # (T-1, V)
        assert full.shape == (len(ids) - 1, 320)
        torch.testing.assert_close(full.exp().sum(-1), torch.ones(len(ids) - 1), atol=1e-4, rtol=0)
        torch.testing.assert_close(full.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1), torch.tensor(logprob))


def test_sentences_batched_equal_sentences_alone(lm_server):
    sentences = ["The cat", "A bird sings", "Red water", "The old house near the road", "Then"]
    data = {"tokens_to_generate": 10, "greedy": True}
    together = put(lm_server.url, {**data, "sentences": sentences}).json()
    for i, sentence in enumerate(sentences):
        alone = put(lm_server.url, {**data, "sentences": [sentence]}).json()
        assert alone["token_ids"][0] == together["token_ids"][i]


def test_random_seed_reproduces_and_sentences_differ(lm_server):
    data = {"sentences": ["The moon"] * 4, "tokens_to_generate": 12, "top_k": 0, "top_p": 1.0, "random_seed": 11}
    first, second = put(lm_server.url, data).json(), put(lm_server.url, data).json()
    assert first["token_ids"] == second["token_ids"]
    assert len({tuple(ids) for ids in first["token_ids"]}) > 1  # each sentence draws its own sample


def test_end_strings_and_min_tokens(scripted_server):
    url = scripted_server.url
    # The script continues "The D" with "B" and then EOS; an end string stops inside the script.
    body = put(url, {"sentences": ["The D"], "greedy": True, "tokens_to_generate": 10}).json()
    assert body["sentences"] == ["The DB"] and body["token_ids"][0][-1] == 3  # stopped at EOS
    longer = put(url, {"sentences": ["The D"], "greedy": True, "tokens_to_generate": 10,
                       "min_tokens_to_generate": 4}).json()
    assert len(longer["token_ids"][0]) - len(body["token_ids"][0]) >= 2  # EOS blocked for 4 tokens
    prompt = CARD_TEMPLATE.format(prompt="hello")
    cut = put(url, {"sentences": [prompt], "greedy": True, "end_strings": ["", "i"]}).json()
    assert cut["sentences"] == [prompt + "Hi"]  # the end string stays; the empty one is ignored


@pytest.mark.parametrize("data, status, needle", [
    ({"tokens_to_generate": 4}, 400, "sentences must be a list"),
    ({"sentences": "hi"}, 400, "sentences must be a list"),
    ({"sentences": []}, 400, "sentences is empty"),
    ({"sentences": ["a"] * 129}, 400, "Maximum number of sentences is 128"),
    ({"sentences": ["a"], "tokens_to_generate": 0}, 400, "tokens_to_generate must be >= 1"),
    ({"sentences": ["a"], "tokens_to_generate": "5"}, 400, "tokens_to_generate must be an integer"),
    ({"sentences": ["a"], "temperature": 0}, 400, "temperature must be greater than 0"),
    ({"sentences": ["a"], "temperature": 101}, 400, "temperature must be <= 100"),
    ({"sentences": ["a"], "top_p": 1.5}, 400, "top_p must be <= 1"),
    ({"sentences": ["a"], "top_k": -1}, 400, "top_k must be >= 0"),
    ({"sentences": ["a"], "repetition_penalty": 0.9}, 400, "repetition_penalty must be >= 1"),
    ({"sentences": ["a"], "min_tokens_to_generate": -2}, 400, "min_tokens_to_generate must be >= 0"),
    ({"sentences": ["a"], "end_strings": "<extra_id_1>"}, 400, "end_strings must be a list of strings"),
    ({"sentences": ["a"], "random_seed": -1}, 400, "random_seed must be >= 0"),
    ({"sentences": ["a"], "greedy": "yes"}, 400, "greedy must be true or false"),
    ({"sentences": ["a"], "all_probs": True}, 400, "all_probs needs compute_logprob"),
    ({"sentences": [""]}, 400, "the prompt is empty"),
    ({"sentences": ["the " * 60], "tokens_to_generate": 200}, 400, "the model's context is 256 tokens"),
    ({"sentences": ["a b c d e f g h"] * 128, "tokens_to_generate": 100, "compute_logprob": True,
      "all_probs": True}, 400, "all_probs would return"),
])
def test_invalid_requests_get_400_with_the_reason(lm_server, data, status, needle):
    response = put(lm_server.url, data)
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]


def test_context_error_states_both_numbers(lm_server, tiny_model_dir):
    prompt = "the cat " * 40
    tokens = len(Tokenizer.from_dir(tiny_model_dir).encode(prompt))
    message = put(lm_server.url, {"sentences": [prompt], "tokens_to_generate": 250}).json()["error"]["message"]
    assert f"the prompt has {tokens} tokens" in message and "asks for 250 more" in message and "256" in message


def test_bodies_that_are_not_json_objects(lm_server):
    for raw in (b"", b"{", b"[1, 2]", b'{"sentences": ["a"], "temperature": NaN}', b"\xff\xfe"):
        response = requests.put(f"{lm_server.url}/generate", data=raw, headers=HEADERS)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
