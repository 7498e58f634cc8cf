"""The request body size limit, enforced on the declared Content-Length and on the bytes read."""
from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nemotron.server.errors import APIError, error_body


def too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than the server's limit of {limit} bytes "
                         "(raise it with --max-body-mb)", code="request_too_large")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            err = too_large(self.max_bytes)
            await JSONResponse(error_body(413, err.message, code=err.code), 413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:  # chunked bodies declare no length
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)  # answered by the APIError handler
            return message

        await self.app(scope, counting_receive, send)
