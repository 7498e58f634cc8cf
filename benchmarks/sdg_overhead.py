"""How much of its configured concurrency the SDG pipeline keeps in flight, and its own overhead.

    python benchmarks/sdg_overhead.py [--concurrency 32] [--latency-ms 50,100,200] [--seconds 5]

1. Concurrency: a trivial OpenAI-compatible endpoint (a subprocess on 127.0.0.1 that answers every
   chat completion after a fixed delay, without computing anything) serves a seeds -> responses
   pipeline through the HTTP backend. The endpoint logs when each request arrived and left; the
   time-weighted number of requests it held, over the steady part of the run (from the moment the
   window first filled to the last arrival), divided by the configured concurrency, is the figure.
   The same is measured for a bare httpx loop (C workers posting back to back) as the reference.
   Each latency of the sweep gets about `--seconds` of steady load; the shorter the answer time,
   the more the client's own CPU per request (printed) matters.
2. Overhead: the same pipeline against an in-process backend that answers instantly; the whole
   run's wall time (call cache, result files with fsync, seeds, collection with filters and MinHash
   dedup, progress) divided by the number of model calls is the pipeline's own cost per request.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from nemotron.sdg.backends import BackendStats, ChatResult
from nemotron.sdg.backends.http import HttpClient, OpenAIChat, RetryConfig
from nemotron.sdg.backends.limiter import ConcurrencyConfig
from nemotron.sdg.config import parse_config
from nemotron.sdg.pipeline import Pipeline

SERVER = r'''
import asyncio, json, sys, time
latency = float(sys.argv[1])
log = []
BODY = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                   "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}).encode()
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            arrived = time.monotonic()
            if head.startswith(b"GET /log"):
                data = json.dumps(log).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
                log.clear()
            else:
                await asyncio.sleep(latency)
                writer.write(HEAD + BODY)
                log.append((arrived, time.monotonic()))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
'''


def held(log: list[tuple[float, float]], concurrency: int) -> tuple[float, float, float]:
    """(average requests held in the steady window, its length in s, requests/s overall)."""
    arrivals = sorted(a for a, _ in log)
    start, end = arrivals[min(concurrency, len(arrivals)) - 1], arrivals[-1]
    busy = sum(max(0.0, min(d, end) - max(a, start)) for a, d in log)
    total = max(d for _, d in log) - arrivals[0]
    return busy / (end - start), end - start, len(log) / total


class Instant:
    """A chat backend that answers at once: what remains of a run is the pipeline itself."""

    def __init__(self) -> None:
        self.model, self.stats, self.in_flight, self.concurrency = "instant", BackendStats(), 0, 32

    async def chat(self, messages, sampling):
        self.stats.completion_tokens += 1
        return ChatResult(f"ok {sampling.seed}", 5, 1, "stop")

    async def aclose(self) -> None:
        pass


def config(requests: int, concurrency: int):
    prompts = [f"question number {i}" for i in range(requests)]
    return parse_config({"name": "bench", "models": {"generator": {"model": "m", "max_concurrency": concurrency}},
                         "sampling": {"max_tokens": 16},
                         "stages": [{"name": "prompts", "kind": "seeds", "items": prompts, "field": "prompt",
                                     "filters": {"dedup": False}},
                                    {"name": "answers", "kind": "responses"}],
                         "outputs": {"sft": ["answers"]}})


async def pipeline_over_http(url: str, requests: int, concurrency: int) -> float:
    backend = OpenAIChat(HttpClient(url, concurrency=ConcurrencyConfig(max_concurrency=concurrency),
                                    retry=RetryConfig(timeout=30)), "m")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        await Pipeline(config(requests, concurrency), out, {"generator": backend}, progress=False).run()
        elapsed = time.perf_counter() - start
    await backend.aclose()
    assert backend.stats.completed == requests, backend.stats
    limiter = backend.client.limiter
    print(f"   (adaptive window: {limiter.decreases} decreases, limit {limiter.limit}/{concurrency} at the end)")
    return elapsed


async def bare_httpx(url: str, requests: int, concurrency: int) -> float:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "max_tokens": 16}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        left = iter(range(requests))

        async def worker():
            for _ in left:
                (await client.post("/chat/completions", json=body)).json()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


def overhead(requests: int) -> tuple[float, float]:
    """(seconds per model call, CPU seconds per model call) of a whole run on an instant backend."""
    with tempfile.TemporaryDirectory() as out:
        cpu = time.process_time()
        start = time.perf_counter()
        asyncio.run(Pipeline(config(requests, 32), out, {"generator": Instant()}, progress=False).run())
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        calls = json.loads((Path(out) / "summary.json").read_text())["answers"]["usage"]["calls"]
    assert calls == requests
    return wall / requests, cpu / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", default="50,100,200", help="the endpoint's fixed answer times to sweep")
    parser.add_argument("--seconds", type=float, default=5.0, help="steady load per measurement (bounds requests)")
    parser.add_argument("--overhead-requests", type=int, default=10000)
    args = parser.parse_args()
    c = args.concurrency
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}; concurrency {c}; endpoint: a "
          f"127.0.0.1 subprocess answering after a fixed delay")
    for latency_ms in (float(x) for x in args.latency_ms.split(",")):
        requests = max(4 * c, int(args.seconds * c / (latency_ms / 1000)))
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(latency_ms / 1000)], stdout=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
            fetch_log = lambda: httpx.get(url.removesuffix("/v1") + "/log", timeout=30).json()  # noqa: E731
            print(f"-- {latency_ms:g} ms per answer, {requests} requests")
            rows = []
            for name, run in (("bare httpx loop (reference)", bare_httpx), ("sdg pipeline", pipeline_over_http)):
                fetch_log()
                usage = resource.getrusage(resource.RUSAGE_SELF)
                asyncio.run(run(url, requests, c))
                after = resource.getrusage(resource.RUSAGE_SELF)
                cpu_ms = (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) * 1000 / requests
                average, window, rate = held(fetch_log(), c)
                rows.append(average)
                print(f"   {name:<28} in flight {average:6.2f} / {c} = {average / c:6.1%} over {window:.2f} s "
                      f"steady; {rate:6.0f} req/s; client CPU {cpu_ms:.3f} ms/request")
            ratio = rows[1] / c
            print(f"   pipeline keeps {ratio:.1%} of its configured concurrency in flight ({rows[1] / rows[0]:.2f}x "
                  f"the bare loop) -> {'PASS' if ratio >= 0.95 else 'FAIL'} (>= 95%)")
        finally:
            server.kill()
            server.wait()

    per_call, cpu_per_call = overhead(args.overhead_requests)
    print(f"pipeline overhead on an instant in-process backend: {per_call * 1000:.3f} ms per request wall, "
          f"{cpu_per_call * 1000:.3f} ms CPU ({args.overhead_requests} requests, cache + fsync'd results + "
          f"collection with dedup included) -> {'PASS' if per_call < 1e-3 else 'FAIL'} (< 1 ms)")


if __name__ == "__main__":
    main()
