"""The streaming API (vLLM's AsyncLLM.generate): concurrent requests, output kinds, n > 1, early exits, errors."""
from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

from nemotron.checkpoint.load import load_model
from nemotron.engine.async_llm import AsyncLLM
from nemotron.engine.llm import LLM
from nemotron.engine.llm_engine import EngineConfig, LLMEngine, RequestError
from nemotron.engine.sampling import RequestOutputKind, SamplingParams
from nemotron.errors import NemotronError
from tests.engine.test_engine import prompts


@pytest.fixture()
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, dtype="float32")


def wait_until_idle(engine: LLMEngine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.has_unfinished() and time.monotonic() < deadline:
        time.sleep(0.01)


def run_and_settle(llm: AsyncLLM, main):
    """asyncio.run(main()), then the engine goes idle with no request left and every block free;
    the AsyncLLM is closed whatever happens. -> main's result."""
    engine = llm.engine
    try:
        result = asyncio.run(main())
        wait_until_idle(engine)
        assert engine.num_requests == 0 and engine.blocks.num_free_blocks == engine.blocks.num_blocks
    finally:
        llm.close()
    return result


def test_concurrent_streams_equal_offline_batch(loaded):
    requests = prompts(24, seed=11)
    params = [SamplingParams(max_tokens=8 + i % 9, seed=i, top_k=40, ignore_eos=True) for i in range(24)]
    expected = LLM(loaded).generate(requests, params)
    llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(max_num_seqs=8)))

    async def collect(prompt, p):
        text, ids = "", []
        async for output in llm.generate(prompt, p):  # cumulative: each output extends the one before
            [completion] = output.outputs
            assert completion.text.startswith(text) and completion.token_ids[:len(ids)] == ids
            assert len(completion.token_ids) == len(ids) + 1 and output.finished == completion.finished()
            text, ids = completion.text, completion.token_ids
        return text, ids

    async def main():
        return await asyncio.gather(*(collect(r, p) for r, p in zip(requests, params)))

    try:
        results = asyncio.run(main())
    finally:
        llm.close()
    assert results == [(r.outputs[0].text, r.outputs[0].token_ids) for r in expected]
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks


def test_leaving_a_stream_early_aborts_and_frees_blocks(loaded):
    engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig())
    llm = AsyncLLM(engine)

    async def main():
        seen = 0
        async for _ in llm.generate(prompts(1, seed=12)[0], SamplingParams(max_tokens=200, ignore_eos=True)):
            seen += 1
            if seen == 3:
                break
        return seen

    assert run_and_settle(llm, main) == 3


def test_bad_request_raises_before_streaming(loaded):
    llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig()))

    async def main():
        async for _ in llm.generate([], SamplingParams()):
            pass

    try:
        with pytest.raises(RequestError, match="empty"):
            asyncio.run(main())
    finally:
        llm.close()


def test_a_request_that_cannot_be_added_fails_alone(loaded, monkeypatch):
    """Whatever goes wrong adding one request (here a TypeError, as a float id array once raised deep in
    the tokenizer) fails that request only: the engine thread and the other requests go on."""
    llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig()))
    add = llm.engine.add_request

    def flaky_add(request, request_id=None):
        if request.prompt_ids[0] == 7:
            raise TypeError("not an integer buffer")
        return add(request, request_id)

    monkeypatch.setattr(llm.engine, "add_request", flaky_add)

    async def drain(ids):
        try:
            return [o async for o in llm.generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=6, temperature=0))]
        except RequestError as err:
            return err

    async def main():
        return await asyncio.gather(drain([7, 20, 30]), drain([5, 20, 30]))

    try:
        failed, served = asyncio.run(main())
        assert isinstance(failed, RequestError) and "not an integer buffer" in str(failed)
        assert served[-1].finished and len(served[-1].outputs[0].token_ids) == 6
        assert llm._thread.is_alive()
        again = asyncio.run(drain([5, 20, 30]))
        assert again[-1].outputs[0].token_ids == served[-1].outputs[0].token_ids
    finally:
        llm.close()


def run(llm: AsyncLLM, *calls, one_by_one: bool = False):
    """Drain each (prompt, params, request_id) call of llm.generate, concurrently or one after the
    other (batches of one, as the offline run of one prompt: the same numbers to the bit)."""
    async def drain(prompt, params, request_id):
        return [output async for output in llm.generate(prompt, params, request_id)]

    async def main():
        if one_by_one:
            return [await drain(*call) for call in calls]
        return await asyncio.gather(*(drain(*call) for call in calls))

    return asyncio.run(main())


def test_output_kinds_agree_with_the_offline_batch(loaded):
    prompt = prompts(1, seed=21)[0]
    base = dict(max_tokens=9, ignore_eos=True, seed=5, top_k=30, logprobs=2, prompt_logprobs=1)
    [expected] = LLM(loaded).generate([prompt], SamplingParams(**base))
    llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig()))
    try:
        cumulative, delta, final = run(llm, *((prompt, SamplingParams(**base, output_kind=kind), f"r{kind}")
                                              for kind in RequestOutputKind), one_by_one=True)
    finally:
        llm.close()
    want = expected.outputs[0]
    for outputs in (cumulative, delta, final):
        assert outputs[-1].finished and not any(o.finished for o in outputs[:-1])
        assert all(o.prompt_token_ids == prompt and o.prompt is None for o in outputs)
    assert [o.request_id for o in delta] == ["r1"] * 9
    assert cumulative[-1].outputs == final[0].outputs == [want] and len(final) == 1
    assert len(cumulative) == len(delta) == 9
    pieces = [o.outputs[0] for o in delta]
    assert "".join(p.text for p in pieces) == want.text
    assert sum((p.token_ids for p in pieces), []) == want.token_ids
    assert sum((p.logprobs for p in pieces), []) == want.logprobs and all(len(p.token_ids) == 1 for p in pieces)
    assert pieces[-1].cumulative_logprob == want.cumulative_logprob  # the sum so far, also in a delta
    assert delta[0].prompt_logprobs == expected.prompt_logprobs and all(o.prompt_logprobs is None for o in delta[1:])
    assert all(o.prompt_logprobs == expected.prompt_logprobs for o in cumulative + final)


def test_n_completions_stream_one_at_a_time_and_finish_together(loaded):
    params = dict(n=3, max_tokens=6, ignore_eos=True, seed=8, temperature=0.9)
    [expected] = LLM(loaded).generate(["The cat sees"], SamplingParams(**params))
    llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig()))
    try:
        streamed, final = run(llm, ("The cat sees", SamplingParams(**params), "a"),
                              ({"prompt": "The cat sees"}, SamplingParams(**params, best_of=3,
                                                                          output_kind=RequestOutputKind.FINAL_ONLY), "b"))
    finally:
        llm.close()
    assert len(streamed) == 18 and all(len(o.outputs) == 1 for o in streamed)
    assert [o.finished for o in streamed] == [False] * 17 + [True]
    last = {o.outputs[0].index: o.outputs[0] for o in streamed}  # each completion's final cumulative output
    assert [last[j] for j in range(3)] == expected.outputs
    assert len(final) == 1 and final[0].outputs == expected.outputs and final[0].prompt == "The cat sees"
    assert len({tuple(c.token_ids) for c in expected.outputs}) > 1
    assert llm.engine.blocks.num_free_blocks == llm.engine.blocks.num_blocks


def test_leaving_an_n_stream_early_aborts_every_completion(loaded):
    engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig())
    llm = AsyncLLM(engine)

    async def main():
        async for _ in llm.generate(prompts(1, seed=13)[0], SamplingParams(n=4, max_tokens=200, ignore_eos=True)):
            break

    run_and_settle(llm, main)


def test_abort_ends_streams_with_finish_reason_abort_and_frees_blocks(loaded):
    """vLLM's `await llm.abort(request_id)`: from another task, by the id given to generate (n > 1:
    every completion), the stream ends with a finished output whose running completions say "abort"."""
    engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig())
    llm = AsyncLLM(engine)
    long = SamplingParams(max_tokens=400, ignore_eos=True)

    async def collect(request_id, params):
        return [o async for o in llm.generate(prompts(1, seed=14)[0], params, request_id)]

    async def main():
        one = asyncio.create_task(collect("one", long))
        many = asyncio.create_task(collect("many", SamplingParams(n=3, max_tokens=400, ignore_eos=True, seed=2)))
        short = asyncio.create_task(collect("short", SamplingParams(max_tokens=2, ignore_eos=True)))
        while engine.num_requests < 4 or not short.done():  # "one" and the 3 of "many" running, "short" done
            await asyncio.sleep(0.01)
        await llm.abort(["one", "many", "short", "unknown"])  # finished and unknown ids are ignored
        return await asyncio.wait_for(asyncio.gather(one, many, short), 30)

    one, many, short = run_and_settle(llm, main)
    assert one[-1].finished and one[-1].outputs[0].finish_reason == "abort"
    assert 0 < len(one[-1].outputs[0].token_ids) < 400
    assert many[-1].finished and {o.outputs[0].index for o in many if o.outputs[0].finish_reason == "abort"} == {0, 1, 2}
    assert short[-1].outputs[0].finish_reason == "length" and len(short[-1].outputs[0].token_ids) == 2


def test_from_pretrained_loads_like_llm_and_generates_the_same(tiny_model_dir):
    params = SamplingParams(max_tokens=6, seed=3, temperature=0.8)
    [expected] = LLM(tiny_model_dir, dtype="float32").generate(["The dog"], params)
    llm = AsyncLLM.from_pretrained(tiny_model_dir, dtype="float32", max_num_seqs=4)

    async def main():
        return [o async for o in llm.generate("The dog", params, "x")][-1]

    try:
        final = asyncio.run(main())
    finally:
        llm.close()
    assert llm.engine.config.max_num_seqs == 4
    assert final.outputs == expected.outputs and final.request_id == "x"


def test_abort_right_after_submitting_and_a_reused_id(loaded):
    """An abort that reaches the engine thread with its request still stops it; an n > 1 request
    aborted before its completions stream ends them all; a reused id gets only its own outputs."""
    engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig())
    llm = AsyncLLM(engine)
    prompt = prompts(1, seed=15)[0]

    async def first_output(request_id, params):
        stream = llm.generate(prompt, params, request_id)
        first = await stream.__anext__()  # the request is queued; abort it at once
        await llm.abort(request_id)
        return [first] + [o async for o in stream]

    async def main():
        one = await first_output("x", SamplingParams(max_tokens=300, ignore_eos=True))
        many = llm.generate(prompt, SamplingParams(n=3, max_tokens=300, ignore_eos=True, seed=1), "m")
        pending = asyncio.ensure_future(many.__anext__())
        await asyncio.sleep(0)  # generate has registered "m"; its completions may not stream yet
        await llm.abort("m")
        many_outputs = [await pending] + [o async for o in many]
        again = [o async for o in llm.generate(prompt, SamplingParams(max_tokens=3, ignore_eos=True), "x")]
        return one, many_outputs, again

    one, many, again = run_and_settle(llm, main)
    assert one[-1].outputs[0].finish_reason == "abort" and len(one[-1].outputs[0].token_ids) < 300
    assert many[-1].finished and all(o.outputs[0].finish_reason in (None, "abort") for o in many)
    assert again[-1].outputs[0].finish_reason == "length" and len(again[-1].outputs[0].token_ids) == 3
    assert [len(o.outputs[0].token_ids) for o in again] == [1, 2, 3]  # none of the aborted request's tokens


def test_a_stream_id_in_use_is_refused_across_n(loaded):
    llm = AsyncLLM(LLMEngine(loaded.model, loaded.tokenizer, EngineConfig()))

    async def main():
        single = llm.generate("The cat", SamplingParams(max_tokens=50, ignore_eos=True), "x")
        await single.__anext__()
        with pytest.raises(NemotronError, match="already in use"):
            await llm.generate("The cat", SamplingParams(n=2, max_tokens=5), "x").__anext__()
        await single.aclose()

    try:
        asyncio.run(main())
    finally:
        llm.close()


def engine_sleeps(llm: AsyncLLM, timeout: float = 10.0) -> None:
    """Wait until the engine thread is blocked waiting for work (in threading's Event.wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(llm._thread.ident)
        if frame is not None and frame.f_code.co_name == "wait" and frame.f_code.co_filename == threading.__file__:
            return
        time.sleep(0.01)
    raise AssertionError("the engine thread never went idle")


def test_an_abort_taken_in_with_its_request_stops_it_before_any_step(loaded):
    """The engine thread takes a request and its abort in one go (both queued while it slept): the
    request is added, then aborted; no step runs for it."""
    engine = LLMEngine(loaded.model, loaded.tokenizer, EngineConfig())
    llm = AsyncLLM(engine)
    steps = []
    step = engine.step
    engine.step = lambda: steps.append(1) or step()

    async def main():
        engine_sleeps(llm)
        asleep, llm._wake = llm._wake, threading.Event()  # the engine thread waits on the old event
        stream = llm.generate(prompts(1, seed=16)[0], SamplingParams(max_tokens=300, ignore_eos=True), "x")
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)  # the request is in the inbox
        await llm.abort("x")
        llm._wake = asleep
        asleep.set()
        return [await first] + [o async for o in stream]

    try:
        outputs = asyncio.run(main())
        while llm._inbox or llm._aborts:  # the engine thread has taken both in
            time.sleep(0.01)
        time.sleep(0.2)  # and handled them (a request it kept would be stepping by now)
        wait_until_idle(engine)
    finally:
        llm.close()
    assert [o.outputs[0].finish_reason for o in outputs] == ["abort"] and outputs[0].outputs[0].token_ids == []
    assert steps == [] and engine.num_requests == 0
