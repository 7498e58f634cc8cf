"""Request plumbing shared by the APIs: JSON bodies, client disconnects, timeouts, the shutdown
deadline, server-sent events."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from nemotron.errors import EngineDeadError, NemotronError
from nemotron.server.drain import shutting_down
from nemotron.server.errors import APIError, error_body
from nemotron.server.metrics import CLIENT_CLOSED
from nemotron.server.params import parse
from nemotron.server.schemas import Body
from nemotron.server.state import ServerState

log = logging.getLogger(__name__)
T = TypeVar("T")
B = TypeVar("B", bound=Body)



class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


async def parse_body(request: Request, model: type[B]) -> B:
    """The JSON body as `model`, validated once, off the event loop (a 16 MB body takes a while)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise APIError(415, f"send the request body as JSON with the header 'Content-Type: application/json' "
                            f"(got {media_type or 'no Content-Type'})", code="unsupported_media_type")
    state: ServerState = request.app.state.server
    return await state.run_cpu(parse, await request.body(), model)


async def until_done_or_gone(request: Request, work: Awaitable[T], timeout: float) -> T:
    """Await `work` (the body must have been read). A client disconnect cancels it and raises
    ClientGone; running past `timeout` seconds cancels it and raises HTTP 408; the shutdown
    deadline cancels it and raises 503. Cancelling the work aborts its engine requests, which frees
    their KV blocks."""
    state: ServerState = request.app.state.server
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    stopped = asyncio.get_running_loop().create_future()
    undo = state.drain.at_deadline(lambda: stopped.done() or stopped.set_result(None))
    try:
        done, _ = await asyncio.wait({task, watcher, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the handler itself is cancelled (a forced shutdown): so is the work
        task.cancel()
        raise
    finally:
        undo()
        watcher.cancel()
        stopped.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if watcher in done and not watcher.cancelled():
        raise ClientGone()
    if stopped in done:
        raise shutting_down()
    raise timeout_error(timeout)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def timeout_error(timeout: float) -> APIError:
    return APIError(408, f"the request did not finish within the server's limit of {timeout:g} s; ask for "
                         "fewer tokens or raise --request-timeout", code="timeout")


_END, _SHUTDOWN = object(), object()


def sse_response(state: ServerState, chunks: AsyncIterator[dict], timeout: float) -> StreamingResponse:
    """Stream `chunks` as server-sent events ending in `data: [DONE]`. An error after the stream
    started (the status is already sent), the request timeout and the shutdown deadline go out as
    an `{"error": ...}` event, which the openai package raises.

    The chunks are pulled by a task of their own and handed over through a queue: the response
    may be cancelled at any await (a client disconnect), and cancelling that task (which closes
    `chunks` and so aborts its engine requests) needs no await there."""

    async def produce(queue: asyncio.Queue) -> None:
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    queue.put_nowait(f"data: {dumps(chunk)}\n\n")
        except APIError as err:
            queue.put_nowait(err)
        except NemotronError as err:  # the engine failed under this request (a dead rank: 503)
            log.error("stream failed: %s", err)
            queue.put_nowait(APIError(503 if isinstance(err, EngineDeadError) else 500, str(err)))
        except Exception as err:  # a bug: logged with its traceback; the client still gets an end
            log.error("stream failed", exc_info=err)
            queue.put_nowait(APIError(500, f"internal server error: {type(err).__name__}"))
        finally:
            queue.put_nowait(_END)

    async def events() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        queue: asyncio.Queue = asyncio.Queue()
        producer = asyncio.ensure_future(produce(queue))
        undo = state.drain.at_deadline(lambda: queue.put_nowait(_SHUTDOWN))
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:  # TimeoutError itself from 3.11 on
                    item = timeout_error(timeout)
                if item is _END:
                    break
                if item is _SHUTDOWN:
                    item = shutting_down()
                if isinstance(item, APIError):
                    yield f"data: {dumps(error_body(item.status, item.message, item.param, item.code))}\n\n"
                    break
                yield item
            yield "data: [DONE]\n\n"
        finally:
            undo()
            producer.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def client_closed() -> Response:
    log.debug("the client disconnected before its answer was ready")
    return Response(status_code=CLIENT_CLOSED)
