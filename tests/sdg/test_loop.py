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
