"""Errors a request can end in, and the JSON body every endpoint answers them with.

The body has OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, on every route
(NeMo's /generate included, which answered errors as a bare string with status 200), so one client
check serves all endpoints and the official `openai` package raises its typed exceptions.
"""
from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from nemotron.errors import EngineDeadError

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
          415: "invalid_request_error", 499: "client_closed_request", 503: "service_unavailable"}


class APIError(Exception):
    """An error answered with `status` and a message the client can act on."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(error_body(err.status, err.message, err.param, err.code), err.status, headers=err.headers)


async def handle_api_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, APIError)
    return error_response(err)


async def handle_http_exception(request: Request, err: Exception) -> JSONResponse:
    """Starlette's own 404 / 405, in the same shape."""
    assert isinstance(err, HTTPException)
    message = {404: f"there is no endpoint at {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(err.status_code, str(err.detail))
    return JSONResponse(error_body(err.status_code, message), err.status_code, headers=err.headers)


async def handle_engine_dead(request: Request, err: Exception) -> JSONResponse:
    """The engine cannot serve any more (a step failed, a rank of a parallel run is gone): 503."""
    return JSONResponse(error_body(503, str(err), code="engine_failed"), 503)


EXCEPTION_HANDLERS = {APIError: handle_api_error, HTTPException: handle_http_exception,
                      EngineDeadError: handle_engine_dead}
