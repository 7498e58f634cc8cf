"""uvicorn, with a graceful drain on SIGTERM (what container orchestrators send before stopping).

The first SIGTERM starts the drain (drain.py) and keeps the port open; when the running requests
are done, or the shutdown timeout has ended the rest, uvicorn shuts down as usual and the process
exits with status 0. A second SIGTERM ends the running requests at once. Ctrl-C (SIGINT) stops
as plain uvicorn does.
"""
from __future__ import annotations

import asyncio
import signal
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from nemotron.server.state import ServerState


class DrainingServer(uvicorn.Server):
    def __init__(self, app: Starlette, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.state: ServerState = app.state.server
        self._terms = 0  # SIGTERMs received; handled on the next tick, on the event loop
        self._drain: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self.should_exit:
            self._terms += 1  # a signal handler: only note it
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._terms and self._drain is None:
            self._drain = asyncio.ensure_future(self._run_drain())
        if self._terms > 1 and self._drain is not None and not self._drain.done():
            self.state.drain.expire()
            self._terms = 1
        return await super().on_tick(counter)

    async def _run_drain(self) -> None:
        try:
            await self.state.drain.run(self.state.config.shutdown_timeout_s)
        finally:
            self.should_exit = True
