"""The servers of one model (replicas): a weighted share of one window each, health and failover.

    models:
      generator: {model: nemotron, endpoint: [http://a:8000/v1, {url: http://b:8000/v1, weight: 2}]}

Each endpoint's share of the window is `max_concurrency` x its weight; a call goes to the up
endpoint with the lowest load for its weight. An endpoint that fails `DOWN_AFTER` attempts in a
row (connection refused, timeouts, 5xx) while another is up is taken out: its share leaves the
window (the others are not sent its load), and a health probe (GET {url}/models) runs after a
cooldown (1 s, doubling to 30 s) until it answers, which brings the endpoint and its share back.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nemotron.sdg.backends.limiter import AdaptiveLimiter
from nemotron.sdg.backends.transport import Client, TransportError

DOWN_AFTER = 3
MAX_COOLDOWN = 30.0


def normalize_base_url(url: str) -> str:
    """The base URL as the OpenAI SDK takes it (ending in /v1); a bare http://host:port gets /v1."""
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint must be an http(s) URL, got {url!r}")
    return url + "/v1" if parts.path in ("", "/") else url


@dataclass(slots=True)
class Endpoint:
    """One server of a model: its share of the window (`weight`: calls in flight) and its health."""

    url: str
    weight: float
    client: Client
    in_flight: int = 0
    failures_in_a_row: int = 0
    down: bool = False
    cooldown: float = 1.0
    requests: int = 0
    marked_down: int = 0
    errors: dict = field(default_factory=dict)


def parse_endpoints(endpoint: str | Sequence) -> list[tuple[str, float]]:
    """(url, weight) pairs from one URL, a comma-separated list, or a list of URLs and
    {url, weight} mappings; URLs normalized, weights > 0."""
    items = endpoint.split(",") if isinstance(endpoint, str) else list(endpoint)
    pairs = []
    for item in items:
        if isinstance(item, str):
            url, weight = item.strip(), 1.0
        elif isinstance(item, dict) and set(item) <= {"url", "weight"} and "url" in item:
            url, weight = str(item["url"]), item.get("weight", 1.0)
        else:
            raise ValueError(f"an endpoint is a URL or {{url: ..., weight: ...}}, got {item!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise ValueError(f"endpoint {url}: weight must be a number > 0, got {weight!r}")
        pairs.append((normalize_base_url(url), float(weight)))
    if not pairs:
        raise ValueError("no endpoint given")
    if len({u for u, _ in pairs}) < len(pairs):
        raise ValueError(f"an endpoint is listed twice: {[u for u, _ in pairs]}")
    return pairs




class EndpointPool:
    def __init__(self, endpoints: list[Endpoint], limiter: AdaptiveLimiter, probe_timeout: float = 10.0) -> None:
        self.endpoints = endpoints
        self.limiter = limiter
        self.probe_timeout = probe_timeout
        self._probes: set[asyncio.Task] = set()

    def pick(self, avoid: Endpoint | None = None) -> Endpoint:
        """The up endpoint with the lowest load for its weight (not `avoid`, where another is up)."""
        if len(self.endpoints) == 1:
            return self.endpoints[0]
        up = [e for e in self.endpoints if not e.down and e is not avoid] or \
            [e for e in self.endpoints if not e.down] or self.endpoints
        return min(up, key=lambda e: (e.in_flight + 1) / e.weight)

    def another_up(self, endpoint: Endpoint) -> bool:
        return any(not e.down for e in self.endpoints if e is not endpoint)

    def succeeded(self, endpoint: Endpoint) -> None:
        endpoint.failures_in_a_row = 0

    def failed(self, endpoint: Endpoint, kind: str) -> None:
        endpoint.errors[kind] = endpoint.errors.get(kind, 0) + 1
        endpoint.failures_in_a_row += 1
        if endpoint.failures_in_a_row >= DOWN_AFTER and not endpoint.down and self.another_up(endpoint) \
                and kind != "429":  # a 429 is a busy server, not a broken one
            endpoint.down = True
            endpoint.marked_down += 1
            self._resize()
            probe = asyncio.ensure_future(self._probe(endpoint))
            self._probes.add(probe)
            probe.add_done_callback(self._probes.discard)

    async def _probe(self, endpoint: Endpoint) -> None:
        while endpoint.down:
            await asyncio.sleep(endpoint.cooldown)
            try:
                response = await endpoint.client.get("/models", timeout=self.probe_timeout)
                alive = response.status_code < 500
            except TransportError:
                alive = False
            if alive:
                endpoint.down, endpoint.failures_in_a_row, endpoint.cooldown = False, 0, 1.0
                self._resize()
            else:
                endpoint.cooldown = min(MAX_COOLDOWN, endpoint.cooldown * 2)

    def _resize(self) -> None:
        up = sum(e.weight for e in self.endpoints if not e.down)
        self.limiter.set_ceiling(int(up or min(e.weight for e in self.endpoints)))

    def stats(self) -> dict:
        return {e.url: {"weight": e.weight, "requests": e.requests, "marked_down": e.marked_down,
                        "down": e.down, "errors": dict(sorted(e.errors.items()))} for e in self.endpoints}

    async def aclose(self) -> None:
        for probe in list(self._probes):
            probe.cancel()
        for endpoint in self.endpoints:
            await endpoint.client.aclose()
