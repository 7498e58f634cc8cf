"""The SDG client's HTTP transport: one aiohttp session per endpoint, errors as three kinds.

A pipeline against a local server answering in tens to hundreds of milliseconds makes a thousand
requests a second or more at high concurrency, and on a small machine the client's CPU per request
decides whether the window stays full. Client CPU per request, 64 workers posting back to back to
the stand-in of `benchmarks/sdg_overhead.py`: aiohttp 0.11-0.14 ms, the hand-written HTTP/1.1
client this replaced 0.03-0.04 ms, httpx 4.4 ms (1.2 ms in other runs). aiohttp is kept for one
maintained client serving HTTP, HTTPS and proxies alike, at the price of about 0.1 ms of CPU a
request. Before Python 3.12 it also wrote each request body one event-loop turn late (behind every
reply that arrived with it), which cost the pipeline several points of its window at concurrency
256: `sdg run`'s loop starts that write at once, as aiohttp does from 3.12 on (loop.py). The
window of calls in flight is the limiter's (limiter.py), so the connector itself is unbounded.

What the retry code needs from an attempt is whether it timed out, could not connect, or got no
usable reply: `ReplyTimeout`, `ConnectFailed` and `BrokenReply`, all `TransportError`. A request on a
kept-alive connection that the server closed as it was sent (its idle keep-alive timeout, or a
server closing after each reply) is sent once more at once: aiohttp does that for idempotent
methods only, and SDG's POSTs are repeatable (nothing was answered).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.request import getproxies, proxy_bypass

import aiohttp
from yarl import URL

# What the client asks for (whatever else aiohttp could decode where Brotli or zstd is installed).
_DECODED = frozenset({"", "identity", "gzip", "deflate"})
_JSON = {"Content-Type": "application/json"}


class TransportError(Exception):
    """An attempt that got no usable reply (retried by the caller)."""


class ReplyTimeout(TransportError):
    """No complete reply (or no connection) within the attempt's timeout."""


class ConnectFailed(TransportError):
    """The server could not be reached: refused, unresolvable, TLS failure, proxy failure."""


class BrokenReply(TransportError):
    """The connection broke mid-reply, or the reply was not valid HTTP or not decodable."""


class _Disconnected(BrokenReply):
    """The connection closed (or reset) before any reply to this request."""


class Reply:
    """A response as the SDG client reads it: status, headers (case-insensitive), body."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: Any, content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    def json(self):
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Client:
    """One endpoint (a base URL such as http://host:8000/v1 or https://api.example.com/v1): `post`
    JSON and `get`, each attempt bounded by `timeout` seconds (`connect_timeout` to connect)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 600.0,
                 connect_timeout: float = 30.0) -> None:
        self.base = URL(base_url.rstrip("/"))
        if self.base.scheme not in ("http", "https") or not self.base.host:
            raise ValueError(f"endpoint must be an http(s) URL, got {base_url!r}")
        self.headers = {"User-Agent": "nemotron-sdg", "Accept": "application/json",
                        "Accept-Encoding": "gzip, deflate", **(headers or {})}
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self.proxy, self.proxy_headers = env_proxy(self.base)
        if self.proxy_headers and self.base.scheme == "http":
            # Plain HTTP goes to the proxy as the request itself; HTTPS through its CONNECT tunnel.
            self.headers.update(self.proxy_headers)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, URL] = {}

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(str(self.base) + path)
        return url

    def _open(self) -> aiohttp.ClientSession:
        # A session belongs to the loop it was made in: made on first use, again in a new loop.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session, self._loop = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), headers=self.headers, timeout=self.timeout,
                cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False), loop
        return self._session

    async def post(self, path: str, json: dict) -> Reply:
        return await self._send("POST", path, _dumps(json).encode(), None)

    async def get(self, path: str, timeout: float | None = None) -> Reply:
        return await self._send("GET", path, None, timeout)

    async def _send(self, method: str, path: str, body: bytes | None, timeout: float | None) -> Reply:
        try:
            return await self._once(method, path, body, timeout)
        except _Disconnected:  # a kept-alive connection that the server had closed: once more
            return await self._once(method, path, body, timeout)

    async def _once(self, method: str, path: str, body: bytes | None, timeout: float | None) -> Reply:
        session, url = self._open(), self._url(path)
        limit = self.timeout if timeout is None else aiohttp.ClientTimeout(
            total=timeout, sock_connect=min(timeout, self.timeout.sock_connect or timeout))
        try:
            async with session.request(method, url, data=body, headers=_JSON if body is not None else None,
                                       timeout=limit, proxy=self.proxy,
                                       proxy_headers=self.proxy_headers) as response:
                content = await response.read()
                encoding = response.headers.get("Content-Encoding", "").lower()
                if encoding not in _DECODED:
                    raise BrokenReply(f"unsupported Content-Encoding {encoding!r} (none was asked for)")
                return Reply(response.status, response.headers, content)
        except (asyncio.TimeoutError, TimeoutError):  # aiohttp's timeouts derive from TimeoutError
            raise ReplyTimeout(f"no complete reply within {limit.total:g} s") from None
        except (aiohttp.ClientConnectorError, aiohttp.ClientHttpProxyError) as err:
            raise ConnectFailed(f"cannot connect to {url.host}:{url.port}: {err}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as err:  # before any reply
            raise _Disconnected(f"the connection closed without a reply: {type(err).__name__}: {err}") from None
        except aiohttp.ClientError as err:  # a body cut short or not decodable, a reply that is not HTTP
            raise BrokenReply(f"{type(err).__name__}: {err}") from None

    async def aclose(self) -> None:
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = self._loop = None


def env_proxy(url: URL) -> tuple[URL | None, dict[str, str] | None]:
    """The proxy that HTTP_PROXY / HTTPS_PROXY / NO_PROXY name for `url`, and the headers carrying
    the credentials in its URL; read once per endpoint (aiohttp's `trust_env` would look both up in
    a thread on every request)."""
    proxy = None if proxy_bypass(url.host or "") else getproxies().get(url.scheme)
    if not proxy:
        return None, None
    proxy = URL(proxy)
    auth = aiohttp.BasicAuth.from_url(proxy)
    return proxy.with_user(None), ({"Proxy-Authorization": auth.encode()} if auth else None)


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
