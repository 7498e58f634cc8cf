"""A scripted OpenAI-compatible endpoint on 127.0.0.1, for deterministic tests of the pipeline's
mechanics (parsing, retries, failure modes, resume). Its replies are pure functions of the request,
so two runs of a pipeline against it must produce the same dataset."""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def scripted_reply(messages: list[dict], seed: int | None) -> str:
    """Lists for list prompts, yes for the classifier, a position-independent verdict for the
    judge (the lexicographically larger reply wins), else a reply naming the request's hash."""
    prompt = messages[-1]["content"]
    h = digest(messages, seed)
    if "one letter" in prompt:
        a = re.search(r"<reply_a>\n(.*?)\n</reply_a>", prompt, re.S).group(1)
        b = re.search(r"<reply_b>\n(.*?)\n</reply_b>", prompt, re.S).group(1)
        return "A" if a > b else "B"
    if "yes or no" in prompt:
        return "yes" if int(h[:2], 16) % 4 else "no"
    if "Rewrite" in prompt:  # a revision keeps the subject of the original
        return prompt.split("\n\n")[1] + f" Explain in detail ({h[:6]})."
    if "numbered list" in prompt:
        count = int(m.group(1)) if (m := re.search(r"(?:List|Write) (\d+)", prompt)) else 3
        return "\n".join(f"{i + 1}. item {h[i:i + 6]} number {i}" for i in range(count))
    return f"Reply {h[:12]} to a request of {len(prompt.split())} words."


def reward_scores(messages: list[dict]) -> dict[str, float]:
    h = digest(messages)
    return {a: round(int(h[2 * i:2 * i + 2], 16) / 255 * 4, 3) for i, a in enumerate(ATTRIBUTES)}


class FakeOpenAI:
    """`fault(n, body)` may return a Response to send instead of a reply to request number n
    (1-based); `delay` seconds (or `delay(n)`) pass before each answer."""

    def __init__(self, reply: Callable[[list[dict], int | None], str] = scripted_reply,
                 delay: float | Callable[[int], float] = 0.0,
                 fault: Callable[[int, dict], Response | None] | None = None) -> None:
        self.reply = reply
        self.delay = delay
        self.fault = fault
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.times: list[float] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ClientDisconnect:  # the client was killed mid-request
            return Response(status_code=499)
        self.requests += 1
        n = self.requests
        self.times.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.delay(n) if callable(self.delay) else self.delay
            if delay:
                await asyncio.sleep(delay)
            if self.fault is not None and (response := self.fault(n, body)) is not None:
                return response
            messages = body["messages"]
            if "reward" in body.get("model", ""):
                scores = reward_scores(messages)
                content = ",".join(f"{k}:{v}" for k, v in scores.items())
                logprobs = {"content": [{"token": k, "logprob": v} for k, v in scores.items()]}
                choice = {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": logprobs,
                          "finish_reason": "stop"}
                return JSONResponse({"choices": [choice], "usage": {"prompt_tokens": 10, "completion_tokens": 0}})
            text = self.reply(messages, body.get("seed"))
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            return JSONResponse({"choices": [choice], "usage": {"prompt_tokens": 10,
                                                                "completion_tokens": len(text.split())}})
        finally:
            self.in_flight -= 1


class ThreadServer:
    """uvicorn serving an ASGI app on a thread, on a free 127.0.0.1 port."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1,
                                                    loop="asyncio"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScriptedChat:
    """The same script in-process (no HTTP), as a chat backend."""

    def __init__(self, reply: Callable[[list[dict], int | None], str] = scripted_reply,
                 model: str = "scripted") -> None:
        from nemotron.sdg.backends import BackendStats

        self.reply = reply
        self.model = model
        self.stats = BackendStats()
        self.in_flight = 0
        self.concurrency = 8
        self.calls: list[tuple[list[dict], object]] = []

    async def chat(self, messages, sampling):
        from nemotron.sdg.backends import ChatResult

        self.calls.append((messages, sampling))
        self.stats.requests += 1
        text = self.reply(messages, sampling.seed)
        self.stats.completion_tokens += len(text.split())
        return ChatResult(text, 10, len(text.split()), "stop")

    async def aclose(self) -> None:
        pass


class ScriptedReward:
    def __init__(self, scores: Callable[[list[dict]], dict[str, float]] = reward_scores, model: str = "reward") -> None:
        from nemotron.sdg.backends import BackendStats

        self.scores = scores
        self.model = model
        self.stats = BackendStats()
        self.in_flight = 0
        self.concurrency = 8
        self.calls = 0

    async def score(self, messages):
        self.calls += 1
        return self.scores(messages)

    async def aclose(self) -> None:
        pass
