"""A one-page chat playground at `/`, streaming replies from /v1/chat/completions."""
from __future__ import annotations

from functools import cache
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response


@cache
def page() -> str:
    return files("nemotron.server").joinpath("playground.html").read_text(encoding="utf-8")


async def playground(request: Request) -> Response:
    return HTMLResponse(page())
