"""The event loop a pipeline runs on (sdg/loop.py) and the config key that chooses it."""
from __future__ import annotations

import asyncio
import sys

import pytest

from nemotron.errors import NemotronError
from nemotron.sdg import loop
from nemotron.sdg.config import PipelineConfigError, parse_config
from nemotron.sdg.configs import load


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_where_installed_and_asyncio_on_request():
    pytest.importorskip("uvloop")
    assert loop.loop_name("auto") == "uvloop" and loop.run(_loop_module()).startswith("uvloop")
    assert loop.loop_name("asyncio") == "asyncio" and loop.run(_loop_module(), "asyncio").startswith("asyncio")
    assert loop.run(_loop_module(), "uvloop").startswith("uvloop")


def test_without_uvloop_auto_falls_back_and_uvloop_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop.loop_name("auto") == "asyncio" and loop.run(_loop_module()).startswith("asyncio")
    with pytest.raises(NemotronError, match="uvloop is not installed"):
        loop.loop_name("uvloop")
    with pytest.raises(NemotronError, match="event_loop must be one of"):
        loop.loop_name("trio")


def test_the_config_names_the_loop():
    data = load("sft_prompts")
    assert parse_config(data).event_loop == "auto"
    assert parse_config({**data, "event_loop": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(PipelineConfigError, match="event_loop must be one of auto, uvloop, asyncio, got 'fast'"):
        parse_config({**data, "event_loop": "fast"})


# ---- aiohttp's request bodies written at once (Python < 3.12) ----
async def _writes(log: list, gate: asyncio.Future | None = None) -> str:
    log.append("first step")
    if gate is not None:
        try:
            await gate
        except asyncio.CancelledError:
            log.append("cancelled inside")
            raise
        log.append("after the gate")
    return "written"


async def _fails() -> None:
    raise OSError("broken pipe")


async def _cancels_itself() -> None:
    raise asyncio.CancelledError


def _eager_loop() -> asyncio.AbstractEventLoop:
    event_loop = asyncio.new_event_loop()
    event_loop.set_task_factory(loop.eager_writes(frozenset({_writes.__code__, _fails.__code__, _cancels_itself.__code__})))
    return event_loop


def test_eager_writes_runs_a_first_step_at_once_and_returns_a_done_future():
    async def scenario():
        log = []
        task = asyncio.get_running_loop().create_task(_writes(log))
        assert log == ["first step"] and task.done() and task.result() == "written"  # no loop turn taken
        failed = asyncio.get_running_loop().create_task(_fails())
        assert failed.done() and isinstance(failed.exception(), OSError)
        cancelled = asyncio.get_running_loop().create_task(_cancels_itself())
        assert cancelled.done() and cancelled.cancelled()  # as a task's would be, not a failure
        other = asyncio.ensure_future(asyncio.sleep(0, "other"))  # any other coroutine: a task as usual
        assert isinstance(other, asyncio.Task) and not other.done() and await other == "other"

    event_loop = _eager_loop()
    try:
        event_loop.run_until_complete(scenario())
    finally:
        event_loop.close()


def test_eager_writes_drives_a_waiting_coroutine_to_its_end_and_passes_cancellation_in():
    async def scenario():
        log, gate = [], asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(_writes(log, gate))
        assert log == ["first step"] and not task.done()
        gate.set_result(None)
        assert await task == "written" and log[-1] == "after the gate"
        log, gate = [], asyncio.get_running_loop().create_future()
        task = asyncio.get_running_loop().create_task(_writes(log, gate))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["first step", "cancelled inside"]
        assert gate.cancelled()  # the future it awaited is cancelled too, as Task.cancel does

    event_loop = _eager_loop()
    try:
        event_loop.run_until_complete(scenario())
    finally:
        event_loop.close()


# More than loopback TCP can take in one write while the server (on the same loop) reads nothing: the
# send buffer plus the receiver's, which autotuning grows up to tcp_rmem's maximum (32 MB on some
# hosts: a 4 MB body then went out at once and the test failed there).
LARGE_BODY = 64_000_000


@pytest.mark.parametrize("choice", ["asyncio", "auto"])
def test_posts_small_and_large_on_the_pipelines_loop(choice, monkeypatch):
    """Through the SDG transport on the loop `sdg run` uses: a small body leaves in the first step,
    a large one fills the socket buffers and is finished by the task driving the rest."""
    from tests.sdg.test_transport import raw_server

    from nemotron.sdg.backends.transport import Client

    async def scenario():
        if sys.version_info < (3, 12):
            assert asyncio.get_running_loop().get_task_factory() is not None
        server, url, state = await raw_server(respond)
        client = Client(url, timeout=10)
        try:
            small = await client.post("/x", {"n": 1})
            large = await client.post("/x", {"text": "y" * LARGE_BODY})
        finally:
            await client.aclose()
        server.close()
        return small, large, state

    async def respond(number, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        return True

    driven = []

    async def spy(coro, waiting):
        driven.append(waiting)
        return await drive(coro, waiting)

    drive = loop._drive
    monkeypatch.setattr(loop, "_drive", spy)
    small, large, state = loop.run(scenario(), choice)
    assert len(driven) == (1 if sys.version_info < (3, 12) else 0)  # the large body's rest, only
    assert small.status_code == large.status_code == 200 and state["requests"] == 2
    assert len(state["bodies"][1][1]) > LARGE_BODY
