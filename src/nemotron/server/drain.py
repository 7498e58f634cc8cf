"""Graceful shutdown: on SIGTERM the server stops taking requests and lets running ones finish.

While draining, new requests get 503 (with Retry-After, so clients such as the SDG backends retry
elsewhere or later) and `/health` says "draining"; the port stays open so they hear it. Requests
still running at the deadline are ended the way a client can tell: a stream gets an error event
and `data: [DONE]`, a waiting request a 503. Then the process exits.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from nemotron.server.errors import APIError, error_body

log = logging.getLogger(__name__)

UNCOUNTED = {"/health", "/metrics"}  # probes: answered while draining, never waited for


def shutting_down() -> APIError:
    return APIError(503, "the server is shutting down; send the request to another replica or retry later",
                    code="shutting_down", headers={"Retry-After": "5", "Connection": "close"})


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._at_deadline: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._idle: asyncio.Event | None = None

    def at_deadline(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (on the event loop) if the drain deadline passes; returns the undo."""
        key = self._next = self._next + 1
        self._at_deadline[key] = callback
        return lambda: self._at_deadline.pop(key, None)

    def enter(self) -> None:
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    async def run(self, timeout: float, grace: float = 5.0) -> None:
        """Drain: wait up to `timeout` seconds for running requests, then end the rest (and wait up to
        `grace` seconds for them to send their last words)."""
        self.draining = True
        log.info("draining: %d request(s) running, new ones get 503; up to %g s", self.in_flight, timeout)
        if await self._wait_idle(timeout):
            return
        log.warning("drain deadline passed with %d request(s) running; ending them", self.in_flight)
        self.expire()
        await self._wait_idle(grace)

    def expire(self) -> None:
        """End every running request now (the deadline, or a second SIGTERM)."""
        self.draining = True
        callbacks, self._at_deadline = list(self._at_deadline.values()), {}
        for callback in callbacks:
            callback()

    async def _wait_idle(self, timeout: float) -> bool:
        self._idle = asyncio.Event()
        if self.in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class DrainMiddleware:
    """Counts running requests, and refuses new ones while draining."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app, self.drain = app, drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            err = shutting_down()
            await JSONResponse(error_body(err.status, err.message, code=err.code), err.status,
                               headers=err.headers)(scope, receive, send)
            return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()
