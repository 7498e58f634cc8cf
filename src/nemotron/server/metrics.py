"""Server metrics in the Prometheus text format (version 0.0.4), written without a client library.

Counters and histograms are updated on the event loop thread only, so they need no lock; engine
gauges (queue depth, running batch, KV blocks) are read from the engine when scraped.
"""
from __future__ import annotations

import bisect
import time
from collections import Counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CLIENT_CLOSED = 499  # nginx's status for a request the client gave up on
ENDPOINTS = ("/generate", "/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "/",
             "/openapi.json")


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts: dict[str, list[int]] = {}  # label value -> per-bucket counts (not cumulative)
        self.sums: Counter[str] = Counter()

    def observe(self, label: str, value: float) -> None:
        counts = self.counts.setdefault(label, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[label] += value

    def render(self, name: str, help_text: str, label_name: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for label, counts in sorted(self.counts.items()):
            running = 0
            for bound, count in zip([*map(_number, self.buckets), "+Inf"], counts):
                running += count
                lines.append(f'{name}_bucket{{{label_name}="{label}",le="{bound}"}} {running}')
            lines.append(f'{name}_sum{{{label_name}="{label}"}} {_number(self.sums[label])}')
            lines.append(f'{name}_count{{{label_name}="{label}"}} {running}')
        return lines


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status)
        self.prompt_tokens: Counter[str] = Counter()  # by endpoint
        self.generation_tokens: Counter[str] = Counter()
        self.latency = Histogram()
        self.time_to_first_token = Histogram()

    def count_tokens(self, endpoint: str, prompt: int, generated: int) -> None:
        self.prompt_tokens[endpoint] += prompt
        self.generation_tokens[endpoint] += generated

    def render(self, ready: bool, gauges: dict[str, float]) -> str:
        lines = _sample("nemotron_ready", "gauge", "1 once the model is loaded and requests are served.",
                        [("", float(ready))])
        lines += _sample("nemotron_requests_total", "counter", "HTTP requests answered, by endpoint and status.",
                         [(f'endpoint="{e}",status="{s}"', n) for (e, s), n in sorted(self.requests.items())])
        lines += _sample("nemotron_prompt_tokens_total", "counter", "Prompt tokens processed, by endpoint.",
                         [(f'endpoint="{e}"', n) for e, n in sorted(self.prompt_tokens.items())])
        lines += _sample("nemotron_generation_tokens_total", "counter", "Tokens generated, by endpoint.",
                         [(f'endpoint="{e}"', n) for e, n in sorted(self.generation_tokens.items())])
        for name, (kind, help_text) in _ENGINE_GAUGES.items():
            if name in gauges:
                lines += _sample(f"nemotron_{name}", kind, help_text, [("", gauges[name])])
        lines += self.latency.render("nemotron_request_duration_seconds",
                                     "Time from request to the end of its response, by endpoint.", "endpoint")
        lines += self.time_to_first_token.render("nemotron_time_to_first_token_seconds",
                                                 "Time from request to its first generated token, by endpoint.",
                                                 "endpoint")
        return "\n".join(lines) + "\n"


_ENGINE_GAUGES = {
    "requests_waiting": ("gauge", "Requests queued for the engine (queue depth)."),
    "requests_running": ("gauge", "Requests in the engine's running batch."),
    "kv_blocks_total": ("gauge", "KV-cache blocks in the pool."),
    "kv_blocks_used": ("gauge", "KV-cache blocks held by requests."),
    "kv_blocks_free": ("gauge", "KV-cache blocks free (including cached prefixes no request holds)."),
    "prefix_cache_hit_tokens_total": ("counter", "Prompt tokens served from the prefix cache."),
    "prefix_cache_query_tokens_total": ("counter", "Prompt tokens looked up in the prefix cache."),
    "preemptions_total": ("counter", "Requests preempted because the KV pool ran out."),
    "state_slots_total": ("gauge", "Mamba state slots of a hybrid model (one per running request)."),
    "state_slots_free": ("gauge", "Mamba state slots free."),
    "reward_batches_total": ("counter", "Forward passes of the reward model."),
}


def engine_gauges(stats: dict[str, float]) -> dict[str, float]:
    """LLMEngine.stats() under the metric names above."""
    renamed = {"prefix_cache_hit_tokens": "prefix_cache_hit_tokens_total",
               "prefix_cache_query_tokens": "prefix_cache_query_tokens_total", "preemptions": "preemptions_total"}
    return {renamed.get(k, k): v for k, v in stats.items() if renamed.get(k, k) in _ENGINE_GAUGES}


def _sample(name: str, kind: str, help_text: str, values: list[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{{{labels}}} {_number(v)}" if labels else f"{name} {_number(v)}" for labels, v in values]
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class MetricsMiddleware:
    """Counts every HTTP request by endpoint and status and times it to the end of its response. A
    client that disconnects before its response is complete counts as 499, whatever was started."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        complete = gone = False

        async def watching_receive() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            await self.app(scope, watching_receive, recording_send)
        finally:
            status = CLIENT_CLOSED if gone and not complete else status
            self.metrics.requests[(endpoint, status)] += 1
            self.metrics.latency.observe(endpoint, time.perf_counter() - start)
