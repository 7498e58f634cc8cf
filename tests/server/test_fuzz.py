"""Fuzzed request bodies (hypothesis): every answer is a success or a 4xx with a message, never a 5xx.

Each field gets either a plausible value or arbitrary JSON, so the generated bodies mix valid
requests (kept small to bound the run time) with every kind of wrong type and range.
"""
from __future__ import annotations

import json

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-3, 300),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) |
                        st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
text = st.text(st.characters(codec="utf-8"), max_size=30)
small_int = st.integers(0, 8)
prob = st.floats(0, 1)


def body(fields: dict[str, st.SearchStrategy], required: tuple[str, ...]) -> st.SearchStrategy:
    """A valid body (optional fields present or not), or one with a single field replaced by any JSON."""
    valid = st.fixed_dictionaries({name: fields[name] for name in required},
                                  optional={name: v for name, v in fields.items() if name not in required})

    def corrupt(data: dict, name: str, junk: object) -> dict:
        return {**data, name: junk}

    return st.one_of(valid, st.builds(corrupt, valid, st.sampled_from(sorted(fields)), any_json))


def conversation(last: str) -> st.SearchStrategy:
    """User/assistant pairs (then a user turn when `last` is "user"), maybe after a system message."""
    def build(system: str | None, pairs: list[tuple[str, str]], final: str) -> list[dict]:
        turns = [{"role": role, "content": content}
                 for pair in pairs for role, content in zip(("user", "assistant"), pair)]
        turns += [{"role": "user", "content": final}] if last == "user" else []
        return ([{"role": "system", "content": system}] if system is not None else []) + turns
    pairs = st.lists(st.tuples(text, text), min_size=0 if last == "user" else 1, max_size=2)
    return st.builds(build, st.none() | text, pairs, text)


any_roles = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]),
                                            "content": text}), max_size=4)
SAMPLING = {"temperature": st.floats(0, 3), "top_p": st.floats(0.01, 1), "n": st.integers(1, 3),
            "seed": st.integers(), "stop": st.one_of(text, st.lists(text, max_size=3)), "stream": st.booleans(),
            "top_k": st.integers(-1, 50), "repetition_penalty": st.floats(1, 2), "min_tokens": st.integers(0, 2),
            "ignore_eos": st.booleans(), "model": text, "frequency_penalty": st.floats(-2, 2),
            "presence_penalty": st.floats(-2, 2), "min_p": st.floats(0, 1),
            "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()})}

GENERATE = body({"sentences": st.lists(text, min_size=1, max_size=3), "tokens_to_generate": st.integers(1, 8),
                 "temperature": st.floats(0.01, 3), "add_BOS": st.booleans(), "top_k": st.integers(0, 50),
                 "top_p": prob, "greedy": st.booleans(), "all_probs": st.booleans(),
                 "repetition_penalty": st.floats(1, 2), "min_tokens_to_generate": small_int,
                 "end_strings": st.lists(text, max_size=3), "compute_logprob": st.booleans(),
                 "random_seed": st.integers(0, 2**63)}, required=("sentences",))
COMPLETIONS = body({**SAMPLING, "prompt": st.one_of(text, st.lists(text, min_size=1, max_size=2),
                                                    st.lists(st.integers(0, 319), min_size=1, max_size=6)),
                    "max_tokens": small_int, "echo": st.booleans(), "logprobs": st.integers(0, 5),
                    "best_of": st.integers(1, 3), "suffix": st.just("")}, required=("prompt",))
CHAT = body({**SAMPLING, "messages": conversation("user") | any_roles, "max_tokens": small_int,
             "max_completion_tokens": small_int, "logprobs": st.booleans(), "top_logprobs": st.integers(0, 5),
             "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])})},
            required=("messages",))
REWARD = body({"messages": conversation("assistant") | any_roles, "stream": st.booleans(), "model": text},
              required=("messages",))


def check(response: requests.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
    elif response.headers["content-type"].startswith("text/event-stream"):
        events = [e for e in response.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        for event in events[:-1]:
            assert "error" not in json.loads(event[len("data: "):]), event
    else:
        assert isinstance(response.json(), dict)


@SETTINGS
@given(data=GENERATE)
def test_generate(lm_server, data):
    check(requests.put(f"{lm_server.url}/generate", json=data, timeout=60))


@SETTINGS
@given(data=COMPLETIONS)
def test_completions(lm_server, data):
    check(requests.post(f"{lm_server.url}/v1/completions", json=data, timeout=60))


@SETTINGS
@given(data=CHAT)
def test_chat(lm_server, data):
    check(requests.post(f"{lm_server.url}/v1/chat/completions", json=data, timeout=60))


@SETTINGS
@given(data=REWARD)
def test_reward_chat(reward_server, data):
    check(requests.post(f"{reward_server.url}/v1/chat/completions", json=data, timeout=60))


surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)  # "\ud800": JSON, not Unicode
strange_json = st.recursive(scalars | surrogates, lambda inner: st.lists(inner, max_size=3) |
                            st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=64), strange_json.map(lambda x: json.dumps(x).encode()),
                     st.builds(lambda text: json.dumps({"prompt": text, "sentences": [text], "max_tokens": 1,
                                                        "messages": [{"role": "user", "content": text}]}).encode(),
                               surrogates)),
       route=st.sampled_from([("PUT", "/generate"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                              ("GET", "/v1/models"), ("PUT", "/"), ("DELETE", "/generate")]))
def test_any_body_on_any_route(lm_server, raw, route):
    method, path = route
    response = requests.request(method, f"{lm_server.url}{path}", data=raw, timeout=60,
                                headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
