"""The event loop a pipeline runs on: uvloop where it is installed, else asyncio's own; on Python
before 3.12, with aiohttp's request bodies written at once.

At concurrency 256 against a server answering in 200 ms the client turns about 1,280 requests a
second around on one core, and every millisecond a reply or a request waits for the loop leaves a
slot empty. Two things decide that wait (measured with `benchmarks/sdg_overhead.py`, README, SDG):

- aiohttp writes a POST's headers and body from a task of their own. From Python 3.12 it starts that
  task eagerly (the request leaves in the loop turn that made it); before 3.12 the task's first step
  waits for the next turn, behind every reply that arrived with this one: at 256 calls in flight
  the median time from a reply to the next request on its connection was 17-25 ms, 4-8 ms with
  the write started at once (3 ms on Python 3.12), and 84-89% of the window in flight 91-94%.
  `eager_writes` is the task factory that gives Python 3.11 aiohttp's 3.12 behaviour, for that
  coroutine only: its first step runs at once; if it must wait (a full socket buffer), a task
  drives the rest.
- uvloop (libuv's loop, the usual partner of aiohttp) spends less of the loop's time per request
  (0.31-0.36 ms against 0.37-0.39 in the pipeline; 1 to 3 points more of the window in flight).

A config chooses the loop with `event_loop: auto | uvloop | asyncio`; `auto` falls back to asyncio
where uvloop is not installable (Windows).
"""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from types import CodeType
from typing import Any, TypeVar

from nemotron.errors import NemotronError

EVENT_LOOPS = ("auto", "uvloop", "asyncio")
T = TypeVar("T")


def loop_name(choice: str = "auto") -> str:
    """The loop `choice` runs on: "uvloop" or "asyncio"."""
    if choice not in EVENT_LOOPS:
        raise NemotronError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, got {choice!r}")
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise NemotronError("event_loop uvloop: uvloop is not installed (pip install uvloop), "
                                "or choose event_loop: asyncio") from None
        return "asyncio"
    return "uvloop"


def new_loop(choice: str = "auto") -> asyncio.AbstractEventLoop:
    """A new event loop of the kind `choice` names, writing aiohttp's requests at once."""
    if loop_name(choice) == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    if sys.version_info < (3, 12):
        codes = _aiohttp_writes()
        if codes:
            loop.set_task_factory(eager_writes(codes))
    return loop


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run(main)` on a loop from `new_loop(choice)`."""
    try:
        name = loop_name(choice)  # an unknown or missing loop is an error before anything starts
    except NemotronError:
        main.close()
        raise
    if sys.version_info < (3, 11):  # no asyncio.Runner (nor eager request writes)
        if name == "uvloop":
            import uvloop

            return uvloop.run(main)
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=lambda: new_loop(choice)) as runner:
        return runner.run(main)


def _aiohttp_writes() -> frozenset[CodeType]:
    try:
        from aiohttp.client_reqrep import ClientRequest

        return frozenset({ClientRequest.write_bytes.__code__})
    except (ImportError, AttributeError):  # an aiohttp without it: tasks as usual
        return frozenset()


TaskFactory = Callable[..., "asyncio.Future[Any]"]


def eager_writes(codes: frozenset[CodeType]) -> TaskFactory:
    """A task factory that runs the first step of coroutines whose code is in `codes` at once, in
    the caller (as Python 3.12's eager tasks do): one that finishes there comes back as a done
    future; one that waits is driven to its end by a task. Other coroutines become tasks as usual."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine, **kwargs: Any) -> asyncio.Future:
        if getattr(coro, "cr_code", None) not in codes:
            return asyncio.Task(coro, loop=loop, **kwargs)
        future = loop.create_future()
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            future.set_result(done.value)
            return future
        except (KeyboardInterrupt, SystemExit):
            raise
        except asyncio.CancelledError:  # a task that cancelled itself is cancelled, not failed
            future.cancel()
            return future
        except BaseException as err:  # noqa: BLE001 - the task's outcome, as a task would hold it
            future.set_exception(err)
            return future
        return asyncio.Task(_drive(coro, waiting), loop=loop, **kwargs)

    return factory


async def _drive(coro: Coroutine, waiting: Any) -> Any:
    """Go on with `coro`, suspended on the future `waiting` (None: it only yielded), as its task would."""
    while True:
        cancel = None
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await asyncio.wait((waiting,))  # its outcome is the coroutine's to read
        except asyncio.CancelledError as err:
            cancel = err
            if waiting is not None:
                waiting.cancel()  # as Task.cancel does with the future its coroutine awaits
        try:
            waiting = coro.send(None) if cancel is None else coro.throw(cancel)
        except StopIteration as done:
            return done.value
