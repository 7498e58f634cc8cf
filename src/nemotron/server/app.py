"""The ASGI application: routes of the three APIs, protection middleware, model loading at startup.

    app = create_app(lambda: load_model("path/to/model"), ServerConfig(api_key="..."))
    uvicorn.run(app, host="127.0.0.1", port=8000)

The model loads on a background thread while the server already answers /health (503 until ready);
requests arriving meanwhile wait for it. Middleware, outermost first: metrics (every request
counted, rejected ones included), drain (503 while shutting down), Host check, CORS (only with
cors_origins), API key, body size limit.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nemotron.server import health, nemo_api, openai_api, openapi, playground
from nemotron.server.auth import ApiKeyMiddleware
from nemotron.server.config import ServerConfig
from nemotron.server.drain import DrainMiddleware
from nemotron.server.errors import EXCEPTION_HANDLERS, error_body
from nemotron.server.guard import HostGuardMiddleware
from nemotron.server.limits import BodyLimitMiddleware
from nemotron.server.metrics import MetricsMiddleware
from nemotron.server.plumbing import client_closed
from nemotron.server.state import ModelSource, ServerState

log = logging.getLogger(__name__)


def create_app(model: ModelSource, config: ServerConfig = ServerConfig(), *,
               on_load_error: Callable[[BaseException], None] | None = None) -> Starlette:
    """`model` is a LoadedModel or a function that loads one (run on a background thread at startup);
    `on_load_error` is called on the event loop if loading fails (the CLI stops the server)."""
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.start_loading(model, on_load_error)
        try:
            yield
        finally:
            state.close()

    routes = [
        Route("/generate", nemo_api.generate, methods=["PUT"]),
        Route("/v1/models", openai_api.models, methods=["GET"]),
        Route("/v1/models/{model:path}", openai_api.model, methods=["GET"]),
        Route("/v1/completions", openai_api.completions, methods=["POST"]),
        Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
        Route("/health", health.health, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
        Route("/", playground.playground, methods=["GET"]),
        Route("/", health.health, methods=["PUT"]),  # the model card's readiness probe
    ]
    middleware = [Middleware(MetricsMiddleware, metrics=state.metrics),
                  Middleware(DrainMiddleware, drain=state.drain),
                  Middleware(HostGuardMiddleware, allowed_hosts=config.allowed_hosts, cors_origins=config.cors_origins)]
    if config.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST", "PUT"],
                                     allow_headers=["Authorization", "Content-Type"], max_age=600))
    if config.api_key is not None:
        middleware.append(Middleware(ApiKeyMiddleware, api_key=config.api_key))
    middleware.append(Middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes))
    handlers = {**EXCEPTION_HANDLERS, ClientDisconnect: _client_disconnect, Exception: _internal_error}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.server = state
    return app


async def _client_disconnect(request: Request, err: Exception) -> Response:
    """The client left while its body was being read: normal, not a server error."""
    return client_closed()


async def _internal_error(request: Request, err: Exception) -> JSONResponse:
    """A bug, not a bad request: logged with its traceback, answered in the usual error shape."""
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=err)
    return JSONResponse(error_body(500, f"internal server error: {type(err).__name__}"), 500)
