"""The event loop a pipeline runs on: uvloop where it is installed, else asyncio's own.

At concurrency 256 against a server answering in 200 ms the client turns about 1,280 requests a
second around on one core, and every millisecond a reply waits for the loop leaves a slot empty.
uvloop (libuv's loop, the usual partner of aiohttp) spends less of the loop's time per request
than asyncio's: measured in `benchmarks/sdg_overhead.py` (README, SDG). A config chooses with
`event_loop: auto | uvloop | asyncio`; `auto` falls back to asyncio where uvloop is not
installable (Windows).
"""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
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


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run(main)` on the loop `choice` names."""
    if loop_name(choice) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
