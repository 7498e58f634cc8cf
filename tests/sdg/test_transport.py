"""The SDG client's transport (aiohttp) against raw local servers that answer with exact bytes:
framing (Content-Length, chunked, close-delimited, 1xx), gzip, keep-alive reuse, kept-alive
connections the server closed, timeouts, refusals and broken replies as the three error kinds the
retry code tells apart, and the proxy the environment names."""
from __future__ import annotations

import asyncio
import gzip
import json

import pytest
from yarl import URL

from nemotron.sdg.backends import ConcurrencyConfig, Sampling
from nemotron.sdg.backends.http import HttpClient, OpenAIChat, RetryConfig
from nemotron.sdg.backends.transport import BrokenReply, Client, ConnectFailed, ReplyTimeout, env_proxy
from tests.sdg.fake_server import FakeOpenAI, ThreadServer, free_port

REPLY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "hello"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()


async def raw_server(respond):
    """A server calling `respond(request_number, request_bytes, writer)` for each request; it tracks
    how many connections were opened."""
    state = {"requests": 0, "connections": 0, "bodies": []}

    async def handle(reader, writer):
        state["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
                state["requests"] += 1
                state["bodies"].append((head, body))
                if not await respond(state["requests"], writer):
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", state


def run(respond, requests=3, sequential=True):
    async def scenario():
        server, url, state = await raw_server(respond)
        client = Client(url, timeout=5)
        try:
            if sequential:
                responses = [await client.post("/x", {"n": i}) for i in range(requests)]
            else:
                responses = await asyncio.gather(*(client.post("/x", {"n": i}) for i in range(requests)))
        finally:
            await client.aclose()
        server.close()
        return responses, state

    return asyncio.run(scenario())


def test_content_length_keep_alive_reuses_one_connection():
    async def respond(n, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(REPLY)
                     + REPLY)
        await writer.drain()
        return True

    responses, state = run(respond)
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == ["hello"] * 3
    assert state["connections"] == 1 and state["requests"] == 3
    head, body = state["bodies"][0]
    assert head.startswith(b"POST /x HTTP/1.1\r\n") and b"content-length: 7" in head.lower()
    assert json.loads(body) == {"n": 0}


def test_chunked_gzip_and_close_delimited_bodies():
    zipped = gzip.compress(REPLY)

    async def respond(n, writer):
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"5;ext=1\r\n" + REPLY[:5] + b"\r\n" + b"%x\r\n" % (len(REPLY) - 5) + REPLY[5:]
                         + b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
        elif n == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(zipped)
                         + zipped)
        else:
            writer.write(b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 2\r\n\r\n" + b"busy, come back later")
            await writer.drain()
            return False  # close-delimited: the body ends with the connection
        await writer.drain()
        return True

    responses, state = run(respond)
    assert responses[0].json() == json.loads(REPLY) and responses[1].json() == json.loads(REPLY)
    assert responses[2].status_code == 503 and responses[2].text == "busy, come back later"
    assert responses[2].headers["retry-after"] == "2"


def test_a_kept_alive_connection_closed_by_the_server_is_replaced():
    async def respond(n, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(REPLY) + REPLY)
        await writer.drain()
        return n % 2 == 0  # after odd requests the server closes the (kept-alive) connection

    responses, state = run(respond, requests=5)
    assert all(r.status_code == 200 for r in responses) and state["requests"] == 5
    assert state["connections"] >= 3


def test_concurrent_requests_open_parallel_connections():
    async def respond(n, writer):
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(REPLY) + REPLY)
        await writer.drain()
        return True

    responses, state = run(respond, requests=6, sequential=False)
    assert len(responses) == 6 and state["connections"] == 6


def test_the_proxy_is_the_one_the_environment_names(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy(URL("http://127.0.0.1:8000/v1")) == (None, None)
    monkeypatch.setenv("https_proxy", "http://user:pw@proxy:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    proxy, headers = env_proxy(URL("https://api.example.com/v1"))
    assert proxy == URL("http://proxy:3128") and headers == {"Proxy-Authorization": "Basic dXNlcjpwdw=="}
    assert env_proxy(URL("http://10.0.0.5:8000/v1")) == (None, None)  # no http_proxy
    monkeypatch.setenv("http_proxy", "http://proxy:3128")
    assert env_proxy(URL("http://localhost:8000/v1")) == (None, None)
    assert env_proxy(URL("http://10.0.0.5:8000/v1"))[0] == URL("http://proxy:3128")


def test_requests_go_through_the_proxy_from_the_environment(monkeypatch):
    """A plain-HTTP endpoint behind HTTP_PROXY: the request goes to the proxy in absolute form,
    with the proxy's credentials; the endpoint's host need not resolve from here."""
    async def respond(n, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(REPLY) + REPLY)
        await writer.drain()
        return True

    async def scenario():
        server, url, state = await raw_server(respond)
        monkeypatch.setenv("http_proxy", url.replace("http://", "http://me:secret@"))
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        client = Client("http://upstream.invalid:8000/v1", timeout=5)
        try:
            reply = await client.post("/chat/completions", json={"q": 1})
        finally:
            await client.aclose()
            server.close()
        return reply, state

    reply, state = asyncio.run(scenario())
    head, body = state["bodies"][0]
    assert reply.json() == json.loads(REPLY) and json.loads(body) == {"q": 1}
    assert head.startswith(b"POST http://upstream.invalid:8000/v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nProxy-Authorization: Basic bWU6c2VjcmV0\r\n" in head


def test_chat_backend_end_to_end():
    fake = FakeOpenAI()
    with ThreadServer(fake.app) as server:
        client = HttpClient(server.url, concurrency=ConcurrencyConfig(2), retry=RetryConfig(timeout=5))
        backend = OpenAIChat(client, "m")

        async def twice():
            try:
                return [await backend.chat([{"role": "user", "content": "hi"}], Sampling(seed=1)) for _ in range(2)]
            finally:
                await backend.aclose()

        first, second = asyncio.run(twice())
    assert first.text == second.text and first.text.startswith("Reply ")


def lean(respond, scenario_body):
    """Run `scenario_body(client, state)` against a raw server, with a client on its /v1."""
    async def scenario():
        server, url, state = await raw_server(respond)
        client = Client(url + "/v1", {"Authorization": "Bearer k"}, timeout=0.5, connect_timeout=1)
        try:
            return await scenario_body(client, state), state
        finally:
            await client.aclose()
            server.close()

    return asyncio.run(scenario())


def test_client_posts_json_and_reads_replies():
    zipped = gzip.compress(REPLY)

    async def respond(n, writer):
        if n == 1:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(zipped) + zipped)
        else:
            writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"4\r\nbusy\r\n0\r\n\r\n")
        await writer.drain()
        return True

    async def body(client, state):
        return [await client.post("/chat/completions", json={"q": "é"}), await client.post("/x", json={})]

    (ok, busy), state = lean(respond, body)
    assert ok.status_code == 200 and ok.json() == json.loads(REPLY)
    assert busy.status_code == 429 and busy.headers["retry-after"] == "3" and busy.text == "busy"
    head, sent = state["bodies"][0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and b"\r\nAuthorization: Bearer k\r\n" in head
    assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in head
    assert json.loads(sent) == {"q": "é"} and state["connections"] == 1


def test_timeouts_refusals_and_broken_replies_are_the_three_error_kinds():
    async def respond(n, writer):
        if n == 1:
            await asyncio.sleep(2)  # longer than the client's 0.5 s
        elif n == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut short")
            await writer.drain()
            return False
        elif n == 3:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        elif n == 4:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!")
            await writer.drain()
        else:
            writer.write(b"NOT HTTP\r\n\r\n")
            await writer.drain()
        return True

    async def body(client, state):
        errors = []
        for _ in range(5):
            try:
                await client.post("/x", json={})
            except (ReplyTimeout, ConnectFailed, BrokenReply) as err:
                errors.append(type(err))
        return errors

    errors, _ = lean(respond, body)
    assert errors == [ReplyTimeout, BrokenReply, BrokenReply, BrokenReply, BrokenReply]
    port = free_port()

    async def refused():
        client = Client(f"http://127.0.0.1:{port}/v1")
        try:
            with pytest.raises(ConnectFailed, match=f"cannot connect to 127.0.0.1:{port}"):
                await client.get("/models")
        finally:
            await client.aclose()

    asyncio.run(refused())


def test_one_client_serves_one_event_loop_after_another():
    """A client used under one asyncio.run and then another (a CLI that runs twice, a test) opens a
    new session in the new loop instead of reusing connections of a closed one."""
    fake = FakeOpenAI()
    with ThreadServer(fake.app) as server:
        client = Client(server.url, timeout=5)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 1}
        first = asyncio.run(client.post("/chat/completions", json=body))
        second = asyncio.run(client.post("/chat/completions", json=body))
        asyncio.run(client.aclose())
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
