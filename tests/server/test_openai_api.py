"""The OpenAI API through the official `openai` package: sync, async, streaming, errors."""
from __future__ import annotations

import asyncio
import json

import openai
import pytest
import requests
import torch

from nemotron.checkpoint.load import load_model
from nemotron.tokenizer import Tokenizer, render_chat
from tests.tokenizer.test_tokenizer import tokenizer_files  # noqa: F401 (a fixture)


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def async_client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return Tokenizer.from_dir(tiny_model_dir)


def nemo_greedy(server, prompt: str, tokens: int) -> str:
    body = requests.put(f"{server.url}/generate", json={"sentences": [prompt], "tokens_to_generate": tokens,
                                                        "greedy": True, "end_strings": []}).json()
    return body["sentences"][0][len(prompt):]


def test_models_lists_the_served_model(lm_server):
    models = client(lm_server).models.list().data
    assert [m.id for m in models] == ["tiny"] and models[0].object == "model"


def test_greedy_completion_equals_nemo_greedy(lm_server, tokenizer):
    oai = client(lm_server)
    completion = oai.completions.create(model="anything", prompt="The cat sees the", max_tokens=10, temperature=0)
    choice = completion.choices[0]
    assert choice.text == nemo_greedy(lm_server, "The cat sees the", 10)
    assert choice.finish_reason in ("length", "stop") and completion.model == "tiny"
    assert completion.usage.prompt_tokens == len(tokenizer.encode("The cat sees the"))
    assert completion.usage.completion_tokens <= 10
    as_ids = oai.completions.create(model="x", prompt=tokenizer.encode("The cat sees the"), max_tokens=10,
                                    temperature=0)
    assert as_ids.choices[0].text == choice.text


def test_penalties_follow_openais_formula(lm_server, tokenizer, tiny_model_dir):
    from tests.engine.test_penalties import recompute_penalised_greedy

    model = load_model(tiny_model_dir, dtype="float32").model
    prompt = tokenizer.encode("The cat sees the moon and the")
    expected = recompute_penalised_greedy(model, prompt, 12, presence=0.7, frequency=1.3)
    assert expected != recompute_penalised_greedy(model, prompt, 12, presence=0.0, frequency=0.0)
    text = tokenizer.decode(prompt + expected)[len(tokenizer.decode(prompt)):]
    oai = client(lm_server)
    completion = oai.completions.create(model="x", prompt=prompt, max_tokens=12, temperature=0, presence_penalty=0.7,
                                        frequency_penalty=1.3, extra_body={"ignore_eos": True, "min_p": 0.5})
    assert completion.choices[0].text == text  # min_p does nothing to a greedy choice
    chat = oai.chat.completions.create(model="x", messages=[{"role": "user", "content": "a b"}], max_tokens=4,
                                       seed=1, presence_penalty=-1.0, frequency_penalty=0.5, extra_body={"min_p": 0.1})
    assert chat.choices[0].message.role == "assistant"


def test_prompt_lists_n_and_seeds(lm_server, tokenizer):
    oai = client(lm_server)
    many = oai.completions.create(model="x", prompt=["A bird", "The moon"], n=3, max_tokens=8, seed=5, top_p=0.95)
    assert [c.index for c in many.choices] == list(range(6))
    again = oai.completions.create(model="x", prompt=["A bird", "The moon"], n=3, max_tokens=8, seed=5, top_p=0.95)
    assert [c.text for c in again.choices] == [c.text for c in many.choices]
    assert len({c.text for c in many.choices[:3]}) > 1  # the n choices of one prompt differ
    assert many.usage.prompt_tokens == len(tokenizer.encode("A bird")) + len(tokenizer.encode("The moon"))


def test_logprobs_and_stop(lm_server):
    oai = client(lm_server)
    full = oai.completions.create(model="x", prompt="The dog", max_tokens=12, temperature=0, logprobs=3)
    lp = full.choices[0].logprobs
    assert "".join(lp.tokens) == full.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:k]) for k in range(len(lp.tokens))]
    for token_lp, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert 3 <= len(top) <= 4 and max(top.values()) == pytest.approx(token_lp, abs=1e-5)  # greedy
    text = full.choices[0].text
    stop = text[3:5]
    cut = oai.completions.create(model="x", prompt="The dog", max_tokens=12, temperature=0, stop=[stop, "zzz"])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_echo_with_zero_tokens_scores_the_prompt(lm_server, tokenizer, tiny_model_dir):
    prompt = "The cat sees the moon"
    nemo = requests.put(f"{lm_server.url}/generate", json={"sentences": [prompt], "tokens_to_generate": 1,
                                                           "compute_logprob": True}).json()
    prompt_lps = nemo["logprob"][0][:len(tokenizer.encode(prompt)) - 1]
    oai = client(lm_server)
    for n_logprobs in (0, 2):
        scored = oai.completions.create(model="x", prompt=prompt, max_tokens=0, echo=True, logprobs=n_logprobs)
        choice = scored.choices[0]
        choice_lp = choice.logprobs
        assert choice.text == prompt and "".join(choice_lp.tokens) == prompt
        assert choice_lp.token_logprobs[0] is None and choice_lp.top_logprobs[0] is None
        assert choice_lp.token_logprobs[1:] == pytest.approx(prompt_lps, abs=1e-4)
        assert scored.usage.completion_tokens == 0
    # lm-eval-harness's is_greedy: a prompt token was the model's argmax iff its value tops the alternatives.
    ids = tokenizer.encode(prompt)
    with torch.no_grad():
        reference = load_model(tiny_model_dir, dtype="float32").model(torch.tensor([ids]))[0, :-1].log_softmax(-1)
    for k, (token_lp, top) in enumerate(zip(choice_lp.token_logprobs[1:], choice_lp.top_logprobs[1:])):
        assert (token_lp == max(top.values())) == (int(reference[k].argmax()) == ids[k + 1])
        assert sorted(top.values())[-1] == pytest.approx(float(reference[k].max()), abs=1e-4)


def test_streamed_completion_equals_whole(lm_server):
    oai = client(lm_server)
    whole = oai.completions.create(model="x", prompt="Red water", max_tokens=15, temperature=0, logprobs=1)
    chunks = list(oai.completions.create(model="x", prompt="Red water", max_tokens=15, temperature=0, logprobs=1,
                                         stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    tokens = [t for c in chunks if c.choices for t in c.choices[0].logprobs.tokens]
    assert text == whole.choices[0].text and tokens == whole.choices[0].logprobs.tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_each_streamed_chunk_carries_the_logprobs_of_its_own_text(lm_server):
    """OpenAI: a chunk's logprobs describe the tokens of that chunk's text (they ran one chunk behind)."""
    oai = client(lm_server)
    chunks = [c for c in oai.completions.create(model="x", prompt="Red water", max_tokens=15, temperature=0,
                                                logprobs=1, stream=True) if c.choices]
    assert all(c.choices[0].text == "".join(c.choices[0].logprobs.tokens) for c in chunks)
    assert sum(bool(c.choices[0].text) for c in chunks) > 5
    stream = oai.chat.completions.create(model="x", messages=[{"role": "user", "content": "Red water"}], max_tokens=15,
                                         temperature=0, logprobs=True, stream=True, extra_body={"ignore_eos": True})
    deltas = [c.choices[0] for c in stream if c.choices and c.choices[0].finish_reason is None]
    assert all((d.delta.content or "") == "".join(t.token for t in (d.logprobs.content if d.logprobs else []))
               for d in deltas)
    assert sum(bool(d.delta.content) for d in deltas) > 5


def test_stop_token_ids_end_a_completion(lm_server, tokenizer):
    """vLLM's stop_token_ids: the completion ends before that token, whose text is not shown."""
    prompt = "The dog"
    free = requests.put(f"{lm_server.url}/generate", json={"sentences": [prompt], "tokens_to_generate": 10,
                                                           "greedy": True, "end_strings": []}).json()
    ids = free["token_ids"][0][len(tokenizer.encode(prompt)):]
    stop_id = ids[3]
    cut = client(lm_server).completions.create(model="x", prompt=prompt, max_tokens=10, temperature=0,
                                               extra_body={"stop_token_ids": [stop_id]}).choices[0]
    first = ids.index(stop_id)
    assert cut.finish_reason == "stop"
    assert cut.text == tokenizer.decode(tokenizer.encode(prompt) + ids[:first])[len(prompt):]


def test_chat_reply_stops_at_the_turn_marker(scripted_server, tokenizer):
    oai = client(scripted_server)
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Say hi"}]
    chat = oai.chat.completions.create(model="x", messages=messages, max_tokens=20, logprobs=True, top_logprobs=2)
    choice = chat.choices[0]
    # The turn ends "Hi.\n<extra_id_1>": the stop and the template's newline before it are not content.
    assert choice.message.content == "Hi." and choice.finish_reason == "stop"
    assert chat.usage.prompt_tokens == len(tokenizer.encode(render_chat(messages)))
    assert chat.usage.completion_tokens == 5  # H, i, ., newline, <extra_id_1>
    assert "".join(t.token for t in choice.logprobs.content) == "Hi."
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
               for t in choice.logprobs.content)
    stream = oai.chat.completions.create(model="x", messages=messages, max_tokens=20, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hi."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_without_max_tokens_may_use_the_rest_of_the_context(lm_server):
    chat = client(lm_server).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "hello"}], temperature=0, extra_body={"ignore_eos": True})
    assert chat.choices[0].finish_reason in ("length", "stop")
    assert chat.usage.total_tokens <= 256


def test_async_client_runs_requests_concurrently(lm_server):
    async def main():
        oai = async_client(lm_server)
        replies = await asyncio.gather(*(
            oai.chat.completions.create(model="x", messages=[{"role": "user", "content": f"word {i}"}],
                                        max_tokens=6, temperature=0) for i in range(8)))
        stream = await oai.completions.create(model="x", prompt="The sun", max_tokens=6, temperature=0, stream=True)
        streamed = "".join([chunk.choices[0].text async for chunk in stream])
        whole = await oai.completions.create(model="x", prompt="The sun", max_tokens=6, temperature=0)
        await oai.close()
        return replies, streamed, whole.choices[0].text
    replies, streamed, whole = asyncio.run(main())
    assert all(r.choices[0].message.role == "assistant" for r in replies) and streamed == whole


@pytest.mark.parametrize("call, needle", [
    (lambda c: c.completions.create(model="x", prompt="hi", max_tokens=300), "the model's context is 256"),
    (lambda c: c.completions.create(model="x", prompt=[], max_tokens=3), "prompt must be"),
    (lambda c: c.completions.create(model="x", prompt="hi", logprobs=21), "logprobs must be <= 20"),
    (lambda c: c.completions.create(model="x", prompt="hi", temperature=-1), "temperature must be >= 0"),
    (lambda c: c.completions.create(model="x", prompt="hi", frequency_penalty=2.5), "frequency_penalty must be <= 2"),
    (lambda c: c.completions.create(model="x", prompt="hi", extra_body={"min_p": 1.5}), "min_p must be <= 1"),
    (lambda c: c.completions.create(model="x", prompt="hi", n=2, best_of=3), "best_of"),
    (lambda c: c.completions.create(model="x", prompt="hi", extra_body={"use_beam_search": True}), "use_beam_search"),
    (lambda c: c.completions.create(model="x", prompt="hi", n=200), "n must be <= 128"),
    (lambda c: c.completions.create(model="x", prompt=[[5, 999]]), "prompt token ids must be in [0, 320)"),
    (lambda c: c.chat.completions.create(model="x", messages=[{"role": "assistant", "content": "hi"}]),
     "roles must alternate"),
    (lambda c: c.chat.completions.create(model="x", messages=[{"role": "user", "content": "a"}],
                                         max_completion_tokens=1000), "max_completion_tokens asks for 1000"),
    (lambda c: c.chat.completions.create(model="x", messages=[{"role": "user", "content": "a"}], top_logprobs=2),
     "top_logprobs needs logprobs"),
    (lambda c: c.chat.completions.create(model="x", messages=[{"role": "user", "content": "a"}],
                                         response_format={"type": "json_object"}), "response_format"),
])
def test_errors_are_openai_bad_requests(lm_server, call, needle):
    with pytest.raises(openai.BadRequestError) as info:
        call(client(lm_server))
    assert needle in info.value.message and info.value.body["type"] == "invalid_request_error"


def test_error_body_shape_and_unknown_routes(lm_server):
    response = requests.post(f"{lm_server.url}/v1/completions", json={"prompt": "hi", "max_tokens": -1})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["param"] == "max_tokens"
    with pytest.raises(openai.NotFoundError):
        client(lm_server).embeddings.create(model="x", input="hi")
    assert requests.get(f"{lm_server.url}/v1/completions").status_code == 405
    sse = requests.post(f"{lm_server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2, "stream": True})
    events = [line for line in sse.text.split("\n\n") if line]
    assert sse.headers["content-type"].startswith("text/event-stream") and events[-1] == "data: [DONE]"
    assert all(json.loads(e[len("data: "):])["object"] == "text_completion" for e in events[:-1])


def test_is_greedy_check_of_evaluation_harnesses(scripted_server):
    """lm-eval-harness scores with echo + logprobs=1 and calls a continuation greedy when each of its
    tokens' value equals the best alternative's. The script makes t -> H -> i -> . and D -> B greedy."""
    T, H, I, DOT, D, B = 283, 313, 284, 291, 318, 302
    oai = client(scripted_server)
    for ids, greedy in (([T, H, I, DOT], [True, True, True]), ([T, D, B, H], [False, True, False])):
        lp = oai.completions.create(model="x", prompt=ids, max_tokens=0, echo=True, logprobs=1).choices[0].logprobs
        assert [tok == max(top.values()) for tok, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:])] == greedy


def test_max_model_len_limits_the_served_context(tiny_model_dir):
    from nemotron.engine.llm_engine import EngineConfig
    from tests.server.conftest import start_server

    server = start_server(lambda: load_model(tiny_model_dir, dtype="float32"),
                          engine=EngineConfig(num_blocks=64, max_model_len=48))
    try:
        assert requests.get(f"{server.url}/v1/models", timeout=30).json()["data"][0]["max_model_len"] == 48
        with pytest.raises(openai.BadRequestError, match="the model's context is 48 tokens"):
            client(server).completions.create(model="x", prompt=list(range(5, 45)), max_tokens=10)
        ok = client(server).completions.create(model="x", prompt=list(range(5, 45)), max_tokens=8,
                                               extra_body={"ignore_eos": True})
        assert ok.usage.completion_tokens == 8
    finally:
        server.stop()


def test_models_retrieve_the_served_model(lm_server):
    oai = client(lm_server)
    assert oai.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError, match="The model 'gpt-4' does not exist"):
        oai.models.retrieve("gpt-4")


def test_a_prompt_that_fills_the_context_can_be_scored(lm_server, tokenizer):
    """prompt + max_tokens must fit the context: 256 + 0 does (lm-eval's loglikelihood of a full window)."""
    ids = [tokenizer.encode("the cat")[-1]] * 255 + [5]
    scored = client(lm_server).completions.create(model="x", prompt=ids, max_tokens=0, echo=True, logprobs=0)
    assert len(scored.choices[0].logprobs.token_logprobs) == 256 and scored.usage.prompt_tokens == 256
    with pytest.raises(openai.BadRequestError, match="256 tokens and max_tokens asks for 1 more"):
        client(lm_server).completions.create(model="x", prompt=ids, max_tokens=1)


def test_echo_keeps_the_markers_the_prompt_spelled(lm_server, tokenizer):
    """decode drops BOS/EOS/PAD (NeMo's way); an echo is the prompt as sent, "</s>" included."""
    prompt = "The cat</s>The dog"
    assert tokenizer.eos_id in tokenizer.encode(prompt)
    oai = client(lm_server)
    echoed = oai.completions.create(model="x", prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=1)
    plain = oai.completions.create(model="x", prompt=prompt, max_tokens=3, temperature=0)
    choice = echoed.choices[0]
    assert choice.text == prompt + plain.choices[0].text
    assert "".join(choice.logprobs.tokens) == choice.text
    assert choice.logprobs.text_offset == [sum(len(t) for t in choice.logprobs.tokens[:k])
                                           for k in range(len(choice.logprobs.tokens))]


def test_each_token_is_a_key_of_its_own_top_logprobs(lm_server, tokenizer):
    """lm-eval's is_greedy looks tokens[i] up in top_logprobs[i]; a byte piece's text ("" or the
    character it completes) is its key there, not "<0xC3>"."""
    prompt = "Paris café 🙂 ok"
    assert any(tokenizer.id_to_piece(i).startswith("<0x") for i in tokenizer.encode(prompt))  # byte pieces
    choice = client(lm_server).completions.create(model="x", prompt=prompt, max_tokens=6, temperature=0, echo=True,
                                                  logprobs=2).choices[0]
    lp = choice.logprobs
    for token, chosen, top in zip(lp.tokens[1:], lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert top[token] == chosen, (token, top)


def test_echo_of_a_llama_style_tokenizer_json_keeps_the_space_after_a_marker(tokenizer_files):  # noqa: F811
    """Decoded alone, the run after a marker lost its first space (the decoder strips a leading one)."""
    from types import SimpleNamespace
    from transformers import PreTrainedTokenizerFast

    from nemotron.server.openai_api import _echo

    tok = Tokenizer.from_file(tokenizer_files["hf"])
    prompt = "The cat</s> The dog"
    ids = tok.encode(prompt)
    echo = _echo(SimpleNamespace(tokenizer=tok), ids)
    assert echo.text == PreTrainedTokenizerFast(tokenizer_file=tokenizer_files["hf"]).decode(ids) == prompt
    assert "".join(echo.token_texts) == echo.text and echo.offsets[-1] + len(echo.token_texts[-1]) == len(prompt)
