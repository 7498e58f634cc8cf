"""Request plumbing shared by the APIs: JSON bodies, client disconnects, timeouts, server-sent events."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from nemotron.errors import EngineDeadError, NemotronError
from nemotron.server.errors import APIError, error_body
from nemotron.server.params import parse_json_object

log = logging.getLogger(__name__)
T = TypeVar("T")

CLIENT_CLOSED = 499  # nginx's status for a request the client gave up on; nobody reads it


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


async def read_json(request: Request) -> dict[str, Any]:
    return parse_json_object(await request.body())


async def until_done_or_gone(request: Request, work: Awaitable[T], timeout: float) -> T:
    """Await `work` (the body must have been read). A client disconnect cancels it and raises
    ClientGone; running past `timeout` seconds cancels it and raises HTTP 408. Cancelling the work
    aborts its engine requests, which frees their KV blocks."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if watcher in done and not watcher.cancelled():
        raise ClientGone()
    raise timeout_error(timeout)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def timeout_error(timeout: float) -> APIError:
    return APIError(408, f"the request did not finish within the server's limit of {timeout:g} s; ask for "
                         "fewer tokens or raise --request-timeout", code="timeout")


def sse_response(chunks: AsyncIterator[dict], timeout: float) -> StreamingResponse:
    """Stream `chunks` as server-sent events ending in `data: [DONE]`. An error after the stream
    started (the status is already sent) goes out as an `{"error": ...}` event, which the openai
    package raises. A client disconnect cancels the stream (Starlette), which aborts its requests."""

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(anext(chunks), max(0.0, deadline - loop.time()))
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:  # TimeoutError itself from 3.11 on
                    err = timeout_error(timeout)
                    yield f"data: {dumps(error_body(err.status, err.message, code=err.code))}\n\n"
                    break
                except APIError as err:
                    yield f"data: {dumps(error_body(err.status, err.message, err.param, err.code))}\n\n"
                    break
                except NemotronError as err:  # the engine failed under this request (EngineDeadError)
                    log.error("stream failed: %s", err)
                    yield f"data: {dumps(error_body(503 if isinstance(err, EngineDeadError) else 500, str(err)))}\n\n"
                    break
                yield f"data: {dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            await chunks.aclose()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def client_closed() -> Response:
    return Response(status_code=CLIENT_CLOSED)
