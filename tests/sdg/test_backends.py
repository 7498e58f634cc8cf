"""The HTTP backend against a scripted local endpoint (retries, Retry-After, refusals, timeouts,
malformed replies, the window of calls in flight) and the adaptive limiter on a fake clock."""
from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from starlette.responses import JSONResponse, Response

from nemotron.sdg.backends import BackendError, ConcurrencyConfig, Sampling
from nemotron.sdg.backends.http import (HttpClient, OpenAIChat, OpenAIReward, RetryConfig, backoff_delay,
                                        normalize_base_url, parse_reward_choice, parse_retry_after, retry_delay)
from nemotron.sdg.backends.limiter import AdaptiveLimiter
from tests.sdg.fake_server import FakeOpenAI, ThreadServer, free_port, reward_scores

FAST_RETRY = RetryConfig(max_attempts=4, base_delay=0.01, max_delay=0.05, timeout=5.0)
USER = [{"role": "user", "content": "Say hi."}]


def chat(url: str, retry: RetryConfig = FAST_RETRY, concurrency: ConcurrencyConfig = ConcurrencyConfig(4),
         model: str = "m") -> OpenAIChat:
    return OpenAIChat(HttpClient(url, "secret", concurrency, retry), model)


async def _one(backend, messages=USER, sampling=Sampling(max_tokens=8, seed=3)):
    try:
        return await backend.chat(messages, sampling)
    finally:
        await backend.aclose()


def test_reply_usage_and_request_fields():
    seen = []
    fake = FakeOpenAI(fault=lambda n, body: seen.append(body))
    with ThreadServer(fake.app) as server:
        result = asyncio.run(_one(chat(server.url), sampling=Sampling(temperature=0.2, top_p=0.5, max_tokens=8,
                                                                        stop=("x",), seed=3)))
    assert result.text.startswith("Reply ") and result.completion_tokens == len(result.text.split())
    assert seen == [{"model": "m", "messages": USER, "temperature": 0.2, "top_p": 0.5, "max_tokens": 8,
                     "stop": ["x"], "seed": 3}]


def test_retry_after_is_honoured_and_retries_counted():
    def fault(n, body):
        if n == 1:
            return JSONResponse({"error": {"message": "slow down"}}, 429, headers={"Retry-After": "0.4"})
        if n == 2:
            return JSONResponse({"error": {"message": "boom"}}, 503)
    fake = FakeOpenAI(fault=fault)
    with ThreadServer(fake.app) as server:
        backend = chat(server.url)
        start = time.monotonic()
        result = asyncio.run(_one(backend))
        elapsed = time.monotonic() - start
    assert result.text.startswith("Reply ") and fake.requests == 3
    assert fake.times[1] - fake.times[0] >= 0.39  # waited as long as Retry-After asked
    assert backend.stats.retries == 2 and backend.stats.errors == {"429": 1, "503": 1}
    assert backend.client.limiter.decreases >= 1 and elapsed < 3


def test_refusal_fails_at_once_with_the_server_message():
    fake = FakeOpenAI(fault=lambda n, body: JSONResponse({"error": {"message": "prompt too long"}}, 400))
    with ThreadServer(fake.app) as server:
        with pytest.raises(BackendError, match="HTTP 400: prompt too long") as info:
            asyncio.run(_one(chat(server.url)))
    assert info.value.status == 400 and fake.requests == 1


def test_gives_up_after_max_attempts():
    fake = FakeOpenAI(fault=lambda n, body: Response("oops", 500))
    with ThreadServer(fake.app) as server:
        with pytest.raises(BackendError, match="gave up after 4 attempts; last error: HTTP 500: oops"):
            asyncio.run(_one(chat(server.url)))
    assert fake.requests == 4


def test_timeouts_are_retried():
    fake = FakeOpenAI(delay=lambda n: 1.0 if n == 1 else 0.0)  # the first answer comes too late
    with ThreadServer(fake.app) as server:
        backend = chat(server.url, RetryConfig(max_attempts=3, base_delay=0.01, max_delay=0.02, timeout=0.3))
        result = asyncio.run(_one(backend))
    assert result.text.startswith("Reply ") and backend.stats.errors == {"timeout": 1} and fake.requests == 2


def test_connection_refused_is_retried_then_reported():
    backend = chat(f"http://127.0.0.1:{free_port()}/v1", RetryConfig(max_attempts=2, base_delay=0.01, max_delay=0.01))
    with pytest.raises(BackendError, match="connection failed"):
        asyncio.run(_one(backend))
    assert backend.stats.requests == 2 and backend.stats.errors == {"connection": 2}


def test_malformed_replies_fail_the_call():
    replies = {1: JSONResponse({"choices": []}), 2: Response("not json", 200)}
    fake = FakeOpenAI(fault=lambda n, body: replies.get(n))
    with ThreadServer(fake.app) as server:
        with pytest.raises(BackendError, match="malformed chat completion"):
            asyncio.run(_one(chat(server.url)))
        # a 200 whose body is not JSON is treated as a glitch and retried
        fake.requests = 1
        assert asyncio.run(_one(chat(server.url))).text.startswith("Reply ")


def test_reward_scores_from_logprobs_or_content():
    fake = FakeOpenAI()
    conversation = [*USER, {"role": "assistant", "content": "Hi."}]
    with ThreadServer(fake.app) as server:
        backend = OpenAIReward(HttpClient(server.url, retry=FAST_RETRY), "tiny-reward")

        async def score():
            try:
                return await backend.score(conversation)
            finally:
                await backend.aclose()

        scores = asyncio.run(score())
    assert scores == reward_scores(conversation)
    assert parse_reward_choice({"message": {"content": "helpfulness:1.5,verbosity:-0.25"}}) == \
        {"helpfulness": 1.5, "verbosity": -0.25}
    with pytest.raises(ValueError):
        parse_reward_choice({"message": {"content": "no scores"}})


def test_window_bounds_calls_in_flight():
    fake = FakeOpenAI(delay=0.05)

    async def many(backend):
        try:
            return await asyncio.gather(*(backend.chat(USER, Sampling(max_tokens=4, seed=i)) for i in range(24)))
        finally:
            await backend.aclose()

    with ThreadServer(fake.app) as server:
        results = asyncio.run(many(chat(server.url, concurrency=ConcurrencyConfig(max_concurrency=6))))
    assert len(results) == 24 and fake.max_in_flight == 6


def test_backoff_and_retry_after_parsing():
    rng = random.Random(0)
    config = RetryConfig(base_delay=1.0, max_delay=8.0)
    delays = [backoff_delay(a, config, rng) for a in range(6)]
    assert all(0.5 * min(8, 2 ** a) <= d < min(8, 2 ** a) for a, d in enumerate(delays))
    assert backoff_delay(0, config, rng, retry_after=5.0) == 5.0
    assert backoff_delay(0, RetryConfig(max_retry_after=2.0), rng, retry_after=50.0) == 2.0
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert normalize_base_url("http://h:1") == "http://h:1/v1"
    assert normalize_base_url("https://api.x.com/v1/") == "https://api.x.com/v1"
    with pytest.raises(ValueError):
        normalize_base_url("localhost:8000")


# ---- the limiter on a fake clock ----
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_limiter_shrinks_on_overload_once_per_round_trip_and_grows_back():
    clock = Clock()
    limiter = AdaptiveLimiter(ConcurrencyConfig(max_concurrency=20, min_concurrency=2), clock)
    for _ in range(5):
        limiter.on_success(0.2)
    limiter.on_overload()
    limiter.on_overload()  # same round trip: a burst counts once
    assert limiter.limit == 14 and limiter.decreases == 1
    clock.now += 0.3
    limiter.on_overload()
    assert limiter.limit == 9
    for _ in range(30):
        clock.now += 0.2
        limiter.on_overload()
    assert limiter.limit == 2  # never below the floor
    for _ in range(2000):
        limiter.on_success(0.2)
    assert limiter.limit == 20  # grown back, never above the ceiling


def test_limiter_shrinks_when_latency_climbs_for_calls_of_a_size():
    clock = Clock()
    limiter = AdaptiveLimiter(ConcurrencyConfig(max_concurrency=16, slowdown=2.0), clock)
    for _ in range(50):
        limiter.on_success(1.0, work=100)
    assert limiter.limit == 16
    limiter.on_success(4.0, work=100)  # one slow call: smoothed ratio 1.6, no reaction
    assert limiter.limit == 16
    for _ in range(5):
        limiter.on_success(3.0, work=120)  # the same size class, three times slower
    assert limiter.limit < 16 and limiter.decreases == 1


def test_limiter_ignores_latency_that_comes_from_reply_length():
    clock = Clock()
    limiter = AdaptiveLimiter(ConcurrencyConfig(max_concurrency=16, slowdown=2.0), clock)
    for tokens in (10, 100, 1000, 10, 1000) * 20:
        limiter.on_success(0.05 + 0.01 * tokens, work=tokens)  # a fixed cost plus a cost per token
    for _ in range(100):
        limiter.on_success(0.05, work=2)  # then short replies, all fixed cost: not "slower per token"
    assert limiter.limit == 16 and limiter.decreases == 0


def test_limiter_window_waits_and_counts_occupancy():
    async def scenario():
        clock = Clock()
        limiter = AdaptiveLimiter(ConcurrencyConfig(max_concurrency=2, adaptive=False), clock)
        order = []

        async def call(i):
            async with limiter.slot():
                order.append(("start", i, limiter.in_flight))
                await asyncio.sleep(0.01)
                clock.now += 1.0

        await asyncio.gather(*(call(i) for i in range(5)))
        assert max(n for _, _, n in order) == 2 and limiter.in_flight == 0
        assert 1.0 < limiter.occupancy() <= 2.0
        waiter = asyncio.ensure_future(call(9))
        await limiter.acquire()
        await limiter.acquire()  # full now
        blocked = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        blocked.cancel()  # a cancelled waiter leaves no slot taken
        await asyncio.gather(blocked, return_exceptions=True)
        limiter.release()
        limiter.release()
        await waiter
        assert limiter.in_flight == 0

    asyncio.run(scenario())


def test_random_failures_within_the_error_budget_keep_the_window():
    clock = Clock()
    limiter = AdaptiveLimiter(ConcurrencyConfig(max_concurrency=16), clock)
    rng = random.Random(0)
    overloaded = 0
    for _ in range(10000):
        clock.now += 0.01
        if rng.random() < 0.3:
            limiter.on_failure("503")
        else:
            limiter.on_success(0.2)
        overloaded += limiter.overloaded()  # would back retries off exponentially
    assert limiter.limit == 16 and limiter.decreases == 0 and overloaded == 0
    for _ in range(200):  # most calls failing: the server is in trouble
        clock.now += 0.01
        limiter.on_failure("503" if rng.random() < 0.8 else "timeout")
    assert limiter.limit < 16 and limiter.overloaded()
    limiter.on_failure("429")  # a 429 is overload at once
    assert limiter.decreases >= 2


class FixedRandom:
    """An rng whose every draw is `value` (0: the shortest jitter, just under 1: the longest)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_retry_delay_is_a_round_trip_for_random_failures_and_backs_off_in_trouble():
    config = RetryConfig(base_delay=0.5, max_delay=30.0, max_retry_after=60.0)
    low, high = FixedRandom(0.0), FixedRandom(0.999)
    # A server answering most calls in 200 ms: every retry of a random failure after 0.1-0.2 s.
    for attempt in range(6):
        assert retry_delay(attempt, config, low, trouble=False, round_trip=0.2) == pytest.approx(0.1)
        assert retry_delay(attempt, config, high, trouble=False, round_trip=0.2) == pytest.approx(0.1999)
    # Answering in seconds: the base delay at most; no round trip known yet: the base delay.
    assert retry_delay(3, config, high, trouble=False, round_trip=8.0) == pytest.approx(0.49975)
    assert retry_delay(3, config, low, trouble=False, round_trip=None) == pytest.approx(0.25)
    # In trouble (429, most calls failing): exponential backoff, capped; the round trip is ignored.
    assert [retry_delay(a, config, low, trouble=True, round_trip=0.2) for a in range(8)] == \
        pytest.approx([0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0])
    # Retry-After is honoured whatever the server's state, and backs off with the attempts too.
    assert retry_delay(0, config, low, trouble=False, round_trip=0.2, retry_after=2.0) == 2.0
    assert retry_delay(4, config, low, trouble=False, round_trip=0.2, retry_after=0.0) == pytest.approx(4.0)
    assert retry_delay(0, config, low, trouble=True, round_trip=0.2, retry_after=500.0) == 60.0


def test_round_trip_is_the_median_latency_of_recent_successes():
    clock = Clock()
    for adaptive in (True, False):
        limiter = AdaptiveLimiter(ConcurrencyConfig(max_concurrency=8, adaptive=adaptive), clock)
        assert limiter.round_trip() is None
        for latency in [0.2] * 40 + [9.0] * 20:  # a few long generations do not move it
            limiter.on_success(latency)
        limiter.on_success(None)  # a call the client itself delayed says nothing
        limiter.on_failure("503")
        assert limiter.round_trip() == 0.2
        for _ in range(64):
            limiter.on_success(0.05)  # only recent calls count
        assert limiter.round_trip() == 0.05


def test_a_random_503_is_retried_after_a_round_trip_and_a_429_backs_off():
    faults = {5: JSONResponse({"error": {"message": "busy"}}, 503),
              8: JSONResponse({"error": {"message": "slow down"}}, 429)}
    fake = FakeOpenAI(delay=lambda n: 0.0 if n in faults else 0.05, fault=lambda n, body: faults.get(n))
    retry = RetryConfig(max_attempts=4, base_delay=1.0, max_delay=8.0, timeout=5.0)
    with ThreadServer(fake.app) as server:
        backend = chat(server.url, retry)

        async def calls():
            try:
                return [await backend.chat(USER, Sampling(max_tokens=8, seed=i)) for i in range(7)]
            finally:
                await backend.aclose()

        asyncio.run(calls())
    assert fake.requests == 9 and backend.stats.retries == 2
    # Request 5, a 503, was asked again one round trip (50 ms, jittered to 25-50) later, where the
    # first backoff step waits 0.5-1 s; request 8, a 429 from the same healthy server, did wait that.
    assert 0.02 < fake.times[5] - fake.times[4] < 0.3
    assert fake.times[8] - fake.times[7] >= 0.5


def test_an_outage_turns_round_trip_retries_into_backoff():
    """A server that answered in 10 ms stops answering at all: the first retries come a round trip
    apart, and once most recent calls fail, the later ones back off exponentially."""
    dead = chat(f"http://127.0.0.1:{free_port()}/v1", RetryConfig(max_attempts=8, base_delay=0.05, max_delay=0.4,
                                                                  timeout=5.0), ConcurrencyConfig(16))
    for _ in range(200):
        dead.client.limiter.on_success(0.01)

    async def many():
        try:
            return await asyncio.gather(*(dead.chat(USER, Sampling(seed=i)) for i in range(16)),
                                        return_exceptions=True)
        finally:
            await dead.aclose()

    start = time.monotonic()
    results = asyncio.run(many())
    elapsed = time.monotonic() - start
    assert all(isinstance(r, BackendError) for r in results) and dead.stats.requests == 16 * 8
    assert dead.client.limiter.overloaded() and dead.client.limiter.limit < 16
    assert elapsed > 0.5  # seven round trips would be 70 ms; attempts 4 to 8 wait 0.2-0.4 s each


def test_loop_lag_counts_how_late_the_loop_ran():
    from nemotron.sdg.backends.limiter import LoopLag

    async def scenario():
        lag = LoopLag(interval=0.01)
        lag.watch()
        await asyncio.sleep(0.05)
        quiet = lag.stalled
        time.sleep(0.25)  # a callback that holds the loop
        await asyncio.sleep(0.05)
        lag.stop()
        return quiet, lag.stalled

    quiet, stalled = asyncio.run(scenario())
    assert 0.2 < stalled - quiet < 0.45


def test_a_client_that_runs_late_does_not_shrink_its_own_window():
    """The event loop held for 0.3 s at a time (a CPU-starved client) delays every reply in flight;
    the server answered in 50 ms throughout, so the adaptive window keeps its size."""
    fake = FakeOpenAI(delay=0.05)
    with ThreadServer(fake.app) as server:
        backend = chat(server.url, concurrency=ConcurrencyConfig(4, baseline_window=10))

        async def scenario():
            calls = [backend.chat(USER, Sampling(max_tokens=8, seed=i)) for i in range(60)]
            loop = asyncio.get_running_loop()
            for k in range(4):
                loop.call_later(0.5 + 0.4 * k, time.sleep, 0.3)
            try:
                await asyncio.gather(*calls)
            finally:
                await backend.aclose()

        asyncio.run(scenario())
    limiter = backend.client.limiter
    assert fake.requests == 60 and limiter.decreases == 0 and limiter.limit == 4
