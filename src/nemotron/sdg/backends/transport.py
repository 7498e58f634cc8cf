"""A lean HTTP/1.1 client for plain-HTTP endpoints on the local network.

A pipeline against a local server answering in tens to hundreds of milliseconds makes a thousand
requests a second or more at high concurrency, and on a small machine the client's CPU per request
decides whether the window stays full. httpx spends most of a request's client-side CPU on request
building, URL handling and pool bookkeeping; here a request is its head bytes (built once per
endpoint but for the path and length) plus the JSON body, written on a kept-alive connection whose
protocol parses the reply as it arrives: status line, headers, then a Content-Length, chunked or
close-delimited body. Idle connections are kept per origin in a stack (O(1) per request), each
attempt has one timer for its timeout, and errors are httpx's exception types, so callers handle
both clients alike.

`LeanClient` is what `HttpClient` uses per plain-HTTP endpoint. HTTPS endpoints and proxies keep
httpx's own transport.
"""
from __future__ import annotations

import asyncio
import json
import zlib
from collections import defaultdict
from urllib.parse import urlsplit

import httpx

_MAX_HEADER_BYTES = 64 * 1024


class Reply:
    """A response as the SDG client reads it: status, headers (lower-case names), body."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    def json(self):
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Stale(Exception):
    """A kept-alive connection that the server had closed: nothing was answered on it."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one exchange at a time, the reply parsed as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.eof = False
        self._head: tuple[int, str, list[tuple[str, str]], dict[str, str]] | None = None
        self._body_start = 0

    # ---- asyncio.Protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None:
            self._parse()

    def eof_received(self) -> bool:
        self.eof = True
        if self.waiter is not None:
            self._parse()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.eof = True
        if self.waiter is not None and not self.waiter.done():
            self._parse()
            if not self.waiter.done():
                if not self.buffer and self._head is None:
                    self._fail(_Stale())
                else:
                    self._fail(httpx.ReadError(f"connection lost mid-response: {exc!r}"))

    # ---- one exchange ----
    def send(self, data: bytes, waiter: asyncio.Future) -> None:
        self.waiter = waiter
        self.buffer.clear()
        self._head, self._body_start = None, 0
        self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def timed_out(self, timeout: float) -> None:
        self._fail(httpx.ReadTimeout(f"no complete reply within {timeout:g} s"))

    def _fail(self, error: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()

    def _parse(self) -> None:
        try:
            done = self._parse_reply()
        except httpx.RemoteProtocolError as err:
            self._fail(err)
            return
        if done is not None:
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result(done)

    def _parse_reply(self) -> tuple[int, list[tuple[str, str]], bytes, bool] | None:
        """(status, headers, body, keep-alive) once the whole reply is here, else None."""
        buffer = self.buffer
        while self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEADER_BYTES:
                    raise httpx.RemoteProtocolError("response headers too long")
                return None
            status_line, *lines = buffer[:end].decode("latin-1").split("\r\n")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise httpx.RemoteProtocolError(f"malformed status line {status_line[:100]!r}")
            headers = [(name.strip(), value.strip()) for name, _, value in
                       (line.partition(":") for line in lines if ":" in line)]
            status = int(parts[1])
            if 100 <= status < 200:  # an informational reply before the real one
                del buffer[:end + 4]
                continue
            fields = {name.lower(): value for name, value in headers}
            self._head = (status, parts[0], headers, fields)
            self._body_start = end + 4
        status, version, headers, fields = self._head
        start = self._body_start
        keep = version == "HTTP/1.1" and fields.get("connection", "").lower() != "close"
        if status in (204, 304):
            return status, headers, b"", keep
        if fields.get("transfer-encoding", "").lower() == "chunked":
            found = _chunked(buffer, start)
            return None if found is None else (status, headers, found, keep)
        if "content-length" in fields:
            try:
                length = int(fields["content-length"])
            except ValueError:
                raise httpx.RemoteProtocolError(f"bad Content-Length {fields['content-length']!r}") from None
            if len(buffer) - start < length:
                return None
            return status, headers, bytes(buffer[start:start + length]), keep
        if not self.eof:  # the body ends with the connection
            return None
        return status, headers, bytes(buffer[start:]), False


def _chunked(buffer: bytearray, position: int) -> bytes | None:
    """The body of a chunked reply starting at `position`, or None while it is incomplete."""
    parts = []
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        try:
            size = int(bytes(buffer[position:line_end]).split(b";")[0].strip(), 16)
        except ValueError:
            raise httpx.RemoteProtocolError("bad chunk size") from None
        position = line_end + 2
        if size == 0:
            while True:  # trailers, up to an empty line
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                if line_end == position:
                    return b"".join(parts)
                position = line_end + 2
        if len(buffer) < position + size + 2:
            return None
        parts.append(bytes(buffer[position:position + size]))
        position += size + 2


class ConnectionPool:
    """Kept-alive connections per origin; `exchange` sends a request's bytes and returns the reply."""

    def __init__(self, max_idle_per_origin: int = 256) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self.max_idle = max_idle_per_origin

    async def exchange(self, origin: tuple[str, int], data: bytes, timeout: float | None,
                       connect_timeout: float | None) -> tuple[int, list[tuple[str, str]], bytes]:
        idle = self._idle[origin]
        while idle:  # a reused connection may have been closed by the server meanwhile: then try fresh
            connection = idle.pop()
            if connection.closed:
                continue
            try:
                return await self._exchange(connection, origin, data, timeout)
            except _Stale:
                continue
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(loop.create_connection(_Connection, *origin), connect_timeout)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {origin[0]}:{origin[1]} timed out") from None
        except OSError as err:
            raise httpx.ConnectError(f"cannot connect to {origin[0]}:{origin[1]}: {err}") from None
        try:
            return await self._exchange(connection, origin, data, timeout)
        except _Stale:
            raise httpx.RemoteProtocolError("the server closed the connection without answering") from None

    async def _exchange(self, connection: _Connection, origin, data: bytes, timeout: float | None):
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, connection.timed_out, timeout)
        connection.send(data, waiter)
        try:
            status, headers, content, keep = await waiter
        except asyncio.CancelledError:
            connection.abort()  # a half-read reply cannot be reused
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if keep and not connection.closed and len(self._idle[origin]) < self.max_idle:
            self._idle[origin].append(connection)
        else:
            connection.close()
        return status, headers, content

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


class LeanClient:
    """One plain-HTTP endpoint (a base URL such as http://host:8000/v1): `post` JSON and `get`,
    as `httpx.AsyncClient` is called by `HttpClient` and the endpoint pool."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 600.0,
                 connect_timeout: float = 30.0, max_idle: int = 256) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"LeanClient speaks plain http, got {base_url!r}")
        self.origin = (parts.hostname, parts.port or 80)
        self.prefix = parts.path.rstrip("/")
        host = parts.netloc.rpartition("@")[2]
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._fixed = (f"Host: {host}\r\nUser-Agent: nemotron-sdg\r\nAccept: application/json\r\n"
                       f"{extra}").encode("latin-1")
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.pool = ConnectionPool(max_idle)

    async def post(self, path: str, json: dict) -> Reply:
        body = _dumps(json).encode()
        head = b"POST %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
            (self.prefix + path).encode(), self._fixed, len(body))
        return await self._send(head + body, self.timeout)

    async def get(self, path: str, timeout: float | None = None) -> Reply:
        head = b"GET %s HTTP/1.1\r\n%s\r\n" % ((self.prefix + path).encode(), self._fixed)
        return await self._send(head, self.timeout if timeout is None else timeout)

    async def _send(self, data: bytes, timeout: float) -> Reply:
        status, headers, content = await self.pool.exchange(self.origin, data, timeout,
                                                            min(self.connect_timeout, timeout))
        fields = {name.lower(): value for name, value in headers}
        encoding = fields.get("content-encoding", "identity").lower()
        # A body that cannot be decoded is a broken reply (a transport error, retried like one).
        if encoding in ("gzip", "deflate"):
            try:
                content = zlib.decompress(content, 47)  # 47: gzip or zlib header, detected
            except zlib.error as err:
                raise httpx.RemoteProtocolError(f"bad {encoding} body: {err}") from None
        elif encoding != "identity":
            raise httpx.RemoteProtocolError(f"unsupported Content-Encoding {encoding!r} (none was asked for)")
        return Reply(status, fields, content)

    async def aclose(self) -> None:
        self.pool.close()


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
