"""Liveness/readiness and metrics: `GET /health` (200 only once the model is loaded and while not
draining for shutdown), `PUT /` (the
model card's readiness probe, `curl -X PUT http://host:port`, which only needs an answer), and
`GET /metrics` (Prometheus text)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from nemotron.server.state import ServerState


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.server
    if state.drain.draining:
        return JSONResponse({"status": "draining", "model": state.config.model_name}, 503)
    if state.ready:
        return JSONResponse({"status": "ready", "model": state.config.model_name})
    if state.load_error is not None:
        return JSONResponse({"status": "failed", "error": state.load_error}, 503)
    return JSONResponse({"status": "loading"}, 503, headers={"Retry-After": "10"})


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.server
    gauges = state.model.gauges() if state.model is not None else {}
    return PlainTextResponse(state.metrics.render(state.ready, gauges),
                             media_type="text/plain; version=0.0.4; charset=utf-8")
