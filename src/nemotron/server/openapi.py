"""`GET /openapi.json`: the NeMo and OpenAI endpoints described in OpenAPI 3.1.

Request bodies come from the pydantic models that validate them (schemas.py), so the document
cannot drift from what the server accepts. The response models below only describe what the
handlers write (they are not used to serialise: NeMo's byte layout is Flask's); the schemathesis
test checks every answer against them.
"""
from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from nemotron.server.schemas import ChatBody, CompletionBody, GenerateBody


class _Out(BaseModel):
    """A response shape (documentation only)."""


class ErrorDetail(_Out):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Out):
    error: ErrorDetail


class GenerateResponse(_Out):
    sentences: list[str]
    tokens: list[list[str]]
    token_ids: list[list[int]]
    offsets: list[list[int]]
    logprob: list[list[float]] | None
    full_logprob: list[list[list[float]]] | None = None


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(_Out):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(_Out):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None


class CompletionResponse(_Out):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(_Out):
    """A stream event of /v1/completions (with stream_options.include_usage, a last one with no
    choices and the usage)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(_Out):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(_Out):
    content: list[TokenLogprob]


class ChatReply(_Out):
    role: Literal["assistant"]
    content: str


class ChatChoice(_Out):
    index: int
    message: ChatReply
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletionResponse(_Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(_Out):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Out):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletionChunk(_Out):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    owned_by: str
    created: int
    max_model_len: int | None = None


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]


class Health(_Out):
    status: Literal["ready", "loading", "failed", "draining"]
    model: str | None = None
    error: str | None = None


_ERRORS = {"400": "invalid request (the message names the field)", "401": "missing or wrong API key",
           "403": "a Host this server does not answer for", "408": "the request timeout passed",
           "413": "body larger than the server's limit", "415": "the body is not application/json",
           "503": "the model is loading or failed, or the server is shutting down"}


def _events(chunk: str) -> dict:
    """With stream: one `data:` event per chunk (an error object if the stream fails after it
    started), then `data: [DONE]`. In OpenAPI 3.1 the schema of an event stream is that of one event."""
    data = {"anyOf": [{"const": "[DONE]", "description": "the last event"},
                      {"type": "string", "contentMediaType": "application/json",
                       "contentSchema": {"anyOf": [_ref(chunk), _ref("ErrorResponse")]},
                       "description": f"a {chunk}, or an ErrorResponse if the stream failed after it started"}]}
    return {"text/event-stream": {"schema": {"type": "object", "required": ["data"],
                                             "properties": {"event": {"const": "message"}, "data": data}}}}


def _operation(summary: str, request: str | None, response: str, *, stream: str | None = None) -> dict:
    content = {"application/json": {"schema": _ref(response)}, **(_events(stream) if stream else {})}
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK", "content": content}}}
    if request is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(request)}}}
    for status, text in _ERRORS.items():
        operation["responses"][status] = {"description": text,
                                          "content": {"application/json": {"schema": _ref("ErrorResponse")}}}
    return operation


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


@cache
def document() -> dict:
    requests = [(GenerateBody, "validation"), (CompletionBody, "validation"), (ChatBody, "validation")]
    responses = [(m, "serialization") for m in (ErrorResponse, GenerateResponse, CompletionResponse, CompletionChunk,
                                                 ChatCompletionResponse, ChatCompletionChunk, ModelList, ModelCard,
                                                 Health)]
    _, schemas = models_json_schema(requests + responses, ref_template="#/components/schemas/{model}")
    paths = {
        "/generate": {"put": _operation("NeMo text generation (the Nemotron-4 model cards' client)",
                                        "GenerateBody", "GenerateResponse")},
        "/v1/completions": {"post": _operation("OpenAI completions", "CompletionBody", "CompletionResponse",
                                               stream="CompletionChunk")},
        "/v1/chat/completions": {"post": _operation(
            "OpenAI chat completions in the Nemotron chat format; on a reward model, the five scores",
            "ChatBody", "ChatCompletionResponse", stream="ChatCompletionChunk")},
        "/v1/models": {"get": _operation("The served model", None, "ModelList")},
        "/v1/models/{model}": {"get": {**_operation("The served model by its name (404 for any other)", None,
                                                    "ModelCard"),
                                       "parameters": [{"name": "model", "in": "path", "required": True,
                                                       "schema": {"type": "string"}}]}},
        "/health": {"get": {"summary": "Ready (200) once the model is loaded; 503 while loading or draining",
                            "responses": {status: {"description": status, "content": {
                                "application/json": {"schema": _ref("Health")}}} for status in ("200", "503")}}},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "nemotron", "version": "1",
                     "description": "NeMo's PUT /generate and the OpenAI-compatible API over one engine."},
            "paths": paths, "components": {"schemas": schemas.get("$defs", {})}}


async def openapi_json(request: Request) -> Response:
    return JSONResponse(document())
