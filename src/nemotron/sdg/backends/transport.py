"""A lean HTTP/1.1 transport for httpx, for plain-HTTP endpoints on the local network.

httpx's own pool (httpcore) spends most of a request's client-side CPU on pool bookkeeping, which
caps a pipeline at a few hundred requests per second per core: too few against a local server
answering short calls (classification, reward scoring) in tens of milliseconds. This transport
keeps idle keep-alive connections per origin in a stack (O(1) per request) and parses responses
directly: status line, headers, then a Content-Length, chunked or close-delimited body.
httpx still builds requests and reads responses, so callers do not change. HTTPS endpoints and
proxies keep httpx's own transport.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict

import httpx

_MAX_HEADER_BYTES = 64 * 1024


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_idle_per_origin: int = 256) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self.max_idle = max_idle_per_origin

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"LeanTransport speaks plain http, not {request.url.scheme}")
        timeout = request.extensions.get("timeout", {})
        origin = (request.url.host, request.url.port or 80)
        body = await request.aread()
        head = self._head(request, body)
        idle = self._idle[origin]
        while idle:  # a reused connection may have been closed by the server meanwhile: then retry fresh
            connection = idle.pop()
            try:
                return await self._exchange(connection, origin, head, body, timeout, request)
            except (ConnectionError, asyncio.IncompleteReadError, _StaleConnection):
                connection.close()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*origin), timeout.get("connect"))
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {origin[0]}:{origin[1]} timed out", request=request) from None
        except OSError as err:
            raise httpx.ConnectError(str(err), request=request) from None
        try:
            return await self._exchange(_Connection(reader, writer), origin, head, body, timeout, request)
        except _StaleConnection:
            raise httpx.RemoteProtocolError("the server closed the connection without answering",
                                            request=request) from None
        except (ConnectionError, asyncio.IncompleteReadError) as err:
            raise httpx.ReadError(f"connection lost: {err!r}", request=request) from None

    @staticmethod
    def _head(request: httpx.Request, body: bytes) -> bytes:
        target = request.url.raw_path.decode("ascii")
        lines = [f"{request.method} {target} HTTP/1.1"]
        for name, value in request.headers.multi_items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _exchange(self, connection: _Connection, origin, head: bytes, body: bytes, timeout: dict,
                        request: httpx.Request) -> httpx.Response:
        connection.writer.write(head + body)
        try:
            return await asyncio.wait_for(self._read(connection, origin), timeout.get("read"))
        except asyncio.TimeoutError:
            connection.close()
            raise httpx.ReadTimeout("timed out waiting for the response", request=request) from None

    async def _read(self, connection: _Connection, origin) -> httpx.Response:
        reader = connection.reader
        await connection.writer.drain()
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if not err.partial:
                raise _StaleConnection() from None
            raise
        except asyncio.LimitOverrunError:
            connection.close()
            raise httpx.RemoteProtocolError("response headers too long") from None
        if len(raw) > _MAX_HEADER_BYTES:
            raise httpx.RemoteProtocolError("response headers too long")
        status_line, *header_lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status = status_line.split(" ", 2)[:2]
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines if ":" in line]
        fields = {name.lower(): value for name, value in headers}
        if fields.get("transfer-encoding", "").lower() == "chunked":
            content = await self._chunked(reader)
        elif "content-length" in fields:
            content = await reader.readexactly(int(fields["content-length"]))
        else:
            content = await reader.read()
            fields["connection"] = "close"
        keep = version == "HTTP/1.1" and fields.get("connection", "").lower() != "close"
        if keep and len(self._idle[origin]) < self.max_idle:
            self._idle[origin].append(connection)
        else:
            connection.close()
        return httpx.Response(int(status), headers=headers, content=content)

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """A kept-alive connection that the server had closed: nothing was answered on it."""
