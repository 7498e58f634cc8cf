"""OpenAI-compatible endpoints over async HTTP: chat completions and reward scoring.

Every call takes a slot of the adaptive window for each attempt on the wire (not while it sleeps
between attempts, when its pipeline unit gives its place up too). 429, 5xx, timeouts and
connection errors are retried: after about one round trip while the server answers most calls
(a random 503), with exponential backoff and jitter while it is in trouble (429s, most calls
failing), and never sooner than a Retry-After header asks (`retry_delay`); other errors (a prompt
too long, a bad parameter) fail the call at once.
A model may have several endpoints (replicas): they share one window, weighted, with failover
and health probes (pool.py). Requests go through aiohttp (transport.py).
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from nemotron.sdg.backends.base import BackendError, BackendStats, ChatResult, Messages, Sampling, waiting
from nemotron.sdg.backends.limiter import AdaptiveLimiter, ConcurrencyConfig, LoopLag
from nemotron.sdg.backends.pool import Endpoint, EndpointPool, normalize_base_url, parse_endpoints
from nemotron.sdg.backends.transport import Client, Reply, ReplyTimeout, TransportError

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
REWARD_ATTRIBUTES_REPORTED = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = 6
    base_delay: float = 0.5  # seconds before the first retry (before jitter)
    max_delay: float = 30.0
    max_retry_after: float = 300.0  # a server asking for longer is waited for this long
    timeout: float = 600.0  # seconds for one attempt (generation of long replies takes a while)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")


def backoff_delay(attempt: int, config: RetryConfig, rng: random.Random, retry_after: float | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1`: base * 2**attempt capped at max_delay, times a
    jitter in [0.5, 1) so clients that failed together do not come back together; never less than
    what the server asked for in Retry-After (capped at max_retry_after)."""
    delay = min(config.max_delay, config.base_delay * 2 ** attempt) * (0.5 + 0.5 * rng.random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, config.max_retry_after))
    return delay


def retry_delay(attempt: int, config: RetryConfig, rng: random.Random, *, trouble: bool,
                round_trip: float | None, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt `attempt` (0-based) of a call.

    A server in trouble (a 429, most recent calls failing: an outage, an overload) or asking for a
    wait (Retry-After) gets exponential backoff. One answering most calls that failed this one at
    random (a 503 from a busy moment, a dropped connection) is asked again after about one round
    trip, `round_trip` (the median latency of recent calls): by then the calls it held when it
    refused have left, and a longer wait only leaves the window without work at the end of a run.
    That wait never exceeds the base delay (a server answering in seconds gets the base delay),
    and is the base delay while no call has succeeded yet. Jitter in [0.5, 1) throughout, so
    calls that failed together do not come back together."""
    if trouble or retry_after is not None or round_trip is None:
        return backoff_delay(attempt if trouble or retry_after is not None else 0, config, rng, retry_after)
    return min(round_trip, config.base_delay) * (0.5 + 0.5 * rng.random())


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


class HttpClient:
    """POSTs JSON to a model's endpoints with one adaptive window, retries and counters.

    With several endpoints the window is the sum of their shares (`max_concurrency` x weight each),
    each call goes to the up endpoint with the lowest load for its weight, and a failed attempt is
    retried at once on another up endpoint (failover) before backing off."""

    def __init__(self, base_url: str | Sequence, api_key: str | None = None,
                 concurrency: ConcurrencyConfig = ConcurrencyConfig(), retry: RetryConfig = RetryConfig(),
                 seed: int = 0) -> None:
        pairs = parse_endpoints(base_url)
        per_endpoint = concurrency.max_concurrency
        shares = [max(1, round(per_endpoint * w)) for _, w in pairs]
        concurrency = dataclasses.replace(concurrency, max_concurrency=sum(shares))
        self.base_url = pairs[0][0]
        self.limiter = AdaptiveLimiter(concurrency)
        self.lag = LoopLag()  # the client's own lateness, which is not the server's latency
        self.retry = retry
        self.stats = BackendStats()
        self._rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        endpoints = [Endpoint(url, share, Client(url, headers, retry.timeout, min(30.0, retry.timeout)))
                     for (url, _), share in zip(pairs, shares)]
        self.pool = EndpointPool(endpoints, self.limiter, probe_timeout=min(10.0, retry.timeout))

    def endpoint_stats(self) -> dict:
        return self.pool.stats()

    # ---- calls ----
    async def post(self, path: str, body: dict) -> dict:
        last = "no attempt made"
        failed_on: Endpoint | None = None
        if self.limiter.config.adaptive:
            self.lag.watch()
        limiter = self.limiter
        for attempt in range(self.retry.max_attempts):
            retry_after = None
            await limiter.acquire()  # (not `async with limiter.slot()`: a context manager per call costs 2 us)
            try:
                endpoint = self.pool.pick(avoid=failed_on)
                endpoint.in_flight += 1
                endpoint.requests += 1
                self.stats.requests += 1
                start, stalled = time.perf_counter(), self.lag.stalled
                try:
                    response = await endpoint.client.post(path, json=body)
                except ReplyTimeout:
                    last, kind = f"timed out after {self.retry.timeout:g} s", "timeout"
                except TransportError as err:
                    last, kind = f"connection failed: {type(err).__name__}: {err}", "connection"
                else:
                    latency = self.lag.server_time(time.perf_counter() - start, stalled)
                    if response.status_code == 200:
                        data = self._json(response)
                        if data is not None:
                            self.pool.succeeded(endpoint)
                            self.limiter.on_success(latency, 1.0 + _completion_tokens(data))
                            self.stats.completed += 1
                            return data
                        last, kind = "the server answered 200 with a body that is not a JSON object", "bad_json"
                    elif response.status_code in RETRY_STATUSES:
                        last, kind = f"HTTP {response.status_code}: {_error_text(response)}", str(response.status_code)
                        retry_after = parse_retry_after(response.headers.get("retry-after"))
                    else:
                        self.pool.succeeded(endpoint)  # it answered: alive, whatever the request's fault
                        self.stats.count_error(str(response.status_code))
                        self.stats.failures += 1
                        raise BackendError(f"HTTP {response.status_code}: {_error_text(response)}",
                                           response.status_code)
                finally:
                    endpoint.in_flight -= 1
                self.stats.count_error(kind)
                self.pool.failed(endpoint, kind)
                self.limiter.on_failure(kind)
            finally:
                limiter.release()
            if attempt + 1 < self.retry.max_attempts:
                self.stats.retries += 1
                failed_on = endpoint
                if retry_after is None and self.pool.another_up(endpoint):
                    continue  # failover: another server takes the retry at once
                # Exponential backoff protects a server in trouble; one failing a share of calls at
                # random is already held to the window, and is asked again after a round trip.
                delay = retry_delay(attempt, self.retry, self._rng, retry_after=retry_after,
                                    trouble=kind == "429" or self.limiter.overloaded(),
                                    round_trip=self.limiter.round_trip())
                async with waiting():  # the unit gives its place in the pipeline up while it sleeps
                    await asyncio.sleep(delay)
        self.stats.failures += 1
        raise BackendError(f"{path}: gave up after {self.retry.max_attempts} attempts; last error: {last}")

    @staticmethod
    def _json(response: Reply) -> dict | None:
        try:
            data = response.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def aclose(self) -> None:
        self.lag.stop()
        await self.pool.aclose()


def _completion_tokens(data: dict) -> int:
    usage = data.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) else 0


def _error_text(response: Reply) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])[:300]
    return str(data)[:300]


class _Windowed:
    """What both endpoint kinds share: the client, its counters and window."""

    def __init__(self, client: HttpClient, model: str) -> None:
        self.client = client
        self.model = model
        self.stats = client.stats

    @property
    def in_flight(self) -> int:
        return self.client.limiter.in_flight

    @property
    def concurrency(self) -> int:
        return self.client.limiter.limit

    async def aclose(self) -> None:
        await self.client.aclose()


class OpenAIChat(_Windowed):
    async def chat(self, messages: Messages, sampling: Sampling) -> ChatResult:
        data = await self.client.post("/chat/completions", {"model": self.model, "messages": messages,
                                                            **sampling.payload()})
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError) as err:
            self.stats.failures += 1
            raise BackendError(f"malformed chat completion ({err}): {str(data)[:200]}") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        result = ChatResult(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                            choice.get("finish_reason"))
        self.stats.prompt_tokens += result.prompt_tokens
        self.stats.completion_tokens += result.completion_tokens
        return result


def parse_reward_choice(choice: dict) -> dict[str, float]:
    """Attribute scores of a reward model's chat choice: `logprobs.content` entries
    {token: attribute, logprob: score} (as NeMo Curator reads them), else the message content
    "helpfulness:3.1,correctness:...". Raises ValueError when neither is readable."""
    logprobs = choice.get("logprobs")
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    if isinstance(entries, list) and entries:
        try:
            return {str(e["token"]): float(e["logprob"]) for e in entries}
        except (KeyError, TypeError, ValueError):
            pass
    content = (choice.get("message") or {}).get("content")
    if not isinstance(content, str) or ":" not in content:
        raise ValueError(f"no reward scores in {str(choice)[:200]}")
    scores = {}
    for item in content.split(","):
        name, _, value = item.partition(":")
        scores[name.strip()] = float(value)
    return scores


class OpenAIReward(_Windowed):
    async def score(self, messages: Messages) -> dict[str, float]:
        data = await self.client.post("/chat/completions", {"model": self.model, "messages": messages})
        try:
            scores = parse_reward_choice(data["choices"][0])
        except (KeyError, IndexError, TypeError, ValueError) as err:
            self.stats.failures += 1
            raise BackendError(f"malformed reward response ({err})") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        return scores
