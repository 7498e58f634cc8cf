"""Optional API key: every request but the health check, the readiness probe and the playground
page must carry `Authorization: Bearer <key>` (what the openai package sends for `api_key`)."""
from __future__ import annotations

import hmac

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from nemotron.server.errors import error_body

OPEN_ROUTES = {("GET", "/health"), ("GET", "/"), ("HEAD", "/"), ("PUT", "/")}


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        if not api_key:
            raise ValueError("the API key must not be empty")
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in OPEN_ROUTES:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            await self.app(scope, receive, send)
            return
        message = ("invalid API key" if given else
                   "this server needs an API key: send the header 'Authorization: Bearer <key>'")
        response = JSONResponse(error_body(401, message, code="invalid_api_key"), 401,
                                headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
