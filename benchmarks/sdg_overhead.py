"""How much of its configured concurrency the SDG pipeline keeps in flight, and its own overhead.

    nice python benchmarks/sdg_overhead.py [--concurrency 64,256] [--latency-ms 200] [--seconds 10]

A stand-in OpenAI-compatible server (a subprocess on 127.0.0.1 that answers every chat completion
after a fixed delay, computing nothing; list prompts get numbered lists, the classifier "yes",
revisions the prompt with more words) serves the ready-made `sft_prompts` pipeline, all 14
stages, through the HTTP backend. The server logs when each request arrived and left.

1. Whole pipeline: the time-weighted number of requests the server held over the steady part of
   the run (from when the window first filled to the last arrival), divided by the configured
   concurrency; for each concurrency, and against a bare httpx loop (C workers posting back to back,
   no pipeline) on the same server as the reference.
2. The same with `--error-rate` (default 30%) of the calls answered 503 at once.
3. Several endpoints: the same pipeline against N servers listed as one model's endpoints, each
   with the per-endpoint concurrency: throughput against one server (about N x expected).
4. Overhead: the pipeline against an in-process backend that answers instantly; the run's wall
   time (call cache, fsync'd result files, collection with filters and MinHash dedup, progress)
   divided by the number of model calls.

The machine's core count and load average are printed: on a shared machine the client's CPU per
request (also printed) is what caps the short-latency and high-concurrency figures.
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
from contextlib import ExitStack
from pathlib import Path

import httpx

from nemotron.sdg.backends import BackendStats, ChatResult
from nemotron.sdg.backends.http import HttpClient, OpenAIChat, RetryConfig
from nemotron.sdg.backends.limiter import ConcurrencyConfig
from nemotron.sdg.config import parse_config
from nemotron.sdg.configs import load
from nemotron.sdg.pipeline import Pipeline

SERVER = r'''
import asyncio, hashlib, json, random, re, sys, time
latency, error_rate = float(sys.argv[1]), float(sys.argv[2])
rng = random.Random(0)
log = []
WORDS = ("alpha bravo cedar delta ember fjord glacier harbor iris jasper kelp lumen meadow nectar orbit prism "
         "quartz raven sierra tundra umber velvet willow xenon yarrow zephyr amber basil cobalt dune").split()

def reply(prompt):
    h = hashlib.sha256(prompt.encode()).digest()
    if "yes or no" in prompt:
        return "yes"
    if "numbered list" in prompt:
        m = re.search(r"(?:List|Write) (\d+)", prompt)
        count = int(m.group(1)) if m else 3
        return "\n".join(f"{i + 1}. " + " ".join(WORDS[b % len(WORDS)] for b in h[4 * i:4 * i + 4]) + f" {h.hex()[i:i + 8]}"
                         for i in range(count))
    if "Rewrite" in prompt:
        return prompt.split("\n\n")[1] + " Please be specific and detailed."
    return "Reply " + h.hex()[:16] + " " + " ".join(WORDS[b % len(WORDS)] for b in h[:12])

def body(text):
    data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                       "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 8}}).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data

BUSY = b'{"error": {"message": "busy"}}'
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % len(BUSY) + BUSY
MODELS = b'{"data": []}'
MODELS = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(MODELS) + MODELS

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            data = await reader.readexactly(length) if length else b""
            arrived = time.monotonic()
            if head.startswith(b"GET /log"):
                out = json.dumps(log).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
                log.clear()
            elif head.startswith(b"GET"):
                writer.write(MODELS)
            elif rng.random() < error_rate:
                writer.write(BUSY)
                log.append((arrived, time.monotonic()))
            else:
                await asyncio.sleep(latency)
                request = json.loads(data)
                writer.write(body(reply(request["messages"][-1]["content"] + str(request.get("seed")))))
                log.append((arrived, time.monotonic()))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
'''


class StandIn:
    """The stand-in server as a subprocess."""

    def __init__(self, latency: float, error_rate: float = 0.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(latency), str(error_rate)],
                                     stdout=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}/v1"

    def log(self) -> list[tuple[float, float]]:
        return httpx.get(self.url.removesuffix("/v1") + "/log", timeout=60).json()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def held(log: list[tuple[float, float]], concurrency: int) -> tuple[float, float, float]:
    """(average requests held in the steady window, its length in s, requests/s overall)."""
    arrivals = sorted(a for a, _ in log)
    start, end = arrivals[min(concurrency, len(arrivals)) - 1], arrivals[-1]
    busy = sum(max(0.0, min(d, end) - max(a, start)) for a, d in log)
    total = max(d for _, d in log) - arrivals[0]
    return busy / max(end - start, 1e-9), end - start, len(log) / total


def sft_config(calls: int, concurrency: int, topics: int = 20):
    """The ready-made sft_prompts pipeline; `calls` lists of `topics` macro topics scale it."""
    data = load("sft_prompts")
    data["models"]["generator"].update(max_concurrency=concurrency, max_attempts=12)
    data["stages"][0].update(calls=calls, count=topics)
    return parse_config(data)


ADAPTIVE = [True]


def backend(urls: list[str], concurrency: int) -> OpenAIChat:
    config = ConcurrencyConfig(max_concurrency=concurrency, adaptive=ADAPTIVE[0])
    return OpenAIChat(HttpClient(urls, concurrency=config,
                                 retry=RetryConfig(timeout=60, max_attempts=12)), "m")


async def pipeline_over_http(urls: list[str], calls: int, concurrency: int, topics: int = 20
                             ) -> tuple[float, OpenAIChat]:
    chat = backend(urls, concurrency)
    with tempfile.TemporaryDirectory() as out:
        chat.client.limiter.reset_occupancy()
        start = time.perf_counter()
        summary = await Pipeline(sft_config(calls, concurrency, topics), out, {"generator": chat},
                                 progress=False).run()
        elapsed = time.perf_counter() - start
        chat.client_occupancy = chat.client.limiter.occupancy()
    await chat.aclose()
    if summary["status"]["exit"]:
        print(f"   (run status: {summary['status']['message']})")
    limiter = chat.client.limiter
    if limiter.decreases:
        print(f"   (the adaptive window shrank {limiter.decreases} times, to {limiter.limit} at the end: replies came "
              f"back slower than the fastest seen, here because the client's CPU is short)")
    return elapsed, chat


async def bare_httpx(url: str, requests: int, concurrency: int) -> float:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "max_tokens": 16}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        left = iter(range(requests))

        async def worker():
            for _ in left:
                (await client.post("/chat/completions", json=body)).json()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def occupancy(latency: float, concurrency: int, calls: int, error_rate: float, reference: bool) -> None:
    with StandIn(latency, error_rate) as server:
        label = f"c={concurrency}" + (f", {error_rate:.0%} answered 503" if error_rate else "")
        if reference:
            server.log()
            asyncio.run(bare_httpx(server.url, 4 * concurrency, concurrency))
            average, window, rate = held(server.log(), concurrency)
            print(f"   {label:<24} bare httpx loop (reference): in flight {average:7.2f} / {concurrency} = "
                  f"{average / concurrency:6.1%} over {window:.1f} s steady, {rate:5.0f} req/s")
        server.log()
        before = cpu()
        elapsed, chat = asyncio.run(pipeline_over_http([server.url], calls, concurrency))
        used = cpu() - before
        log = server.log()
        average, window, rate = held(log, concurrency)
        ratio = average / concurrency
        target = 0.90 if error_rate else 0.95
        stats = chat.stats
        print(f"   {label:<24} sft_prompts pipeline:        in flight {average:7.2f} / {concurrency} = {ratio:6.1%} "
              f"over {window:.1f} s steady, {rate:5.0f} req/s; {len(log)} requests ({stats.retries} retries, "
              f"{stats.failures} given up) in {elapsed:.1f} s; client CPU {used * 1000 / len(log):.3f} ms/request "
              f"-> {'PASS' if ratio >= target else 'FAIL'} (>= {target:.0%})")
        whole = sum(d - a for a, d in log) / elapsed
        print(f"   {'':<24} over the whole run (ramp-up and tail included): {whole / concurrency:6.1%} held by the "
              f"server, {chat.client_occupancy / concurrency:6.1%} of the window taken by the pipeline's calls "
              f"(the gap: time between a reply and the next request, i.e. client and server CPU)")


def endpoints_scaling(latency: float, concurrency: int, count: int) -> None:
    """A small sft_prompts run (4 macro topics) on 1 and on `count` endpoints of `concurrency` each."""
    with ExitStack() as stack:
        servers = [stack.enter_context(StandIn(latency)) for _ in range(count)]
        rates = []
        for n in (1, count):
            for s in servers:
                s.log()
            elapsed, chat = asyncio.run(pipeline_over_http([s.url for s in servers[:n]], 1, concurrency, topics=4))
            logs = [s.log() for s in servers[:n]]
            rate = sum(len(log) for log in logs) / elapsed
            rates.append(rate)
            shares = ", ".join(str(len(log)) for log in logs)
            print(f"   {n} endpoint(s) x c={concurrency}: {rate:6.0f} req/s over the whole run "
                  f"({elapsed:.1f} s; requests per endpoint: {shares})")
        print(f"   {count} endpoints give {rates[1] / rates[0]:.2f}x the throughput of one "
              f"-> {'PASS' if rates[1] / rates[0] >= 0.85 * count else 'FAIL'} (>= {0.85 * count:.2f}x)")


class Instant:
    """A chat backend that answers at once: what remains of a run is the pipeline itself."""

    def __init__(self) -> None:
        self.model, self.stats, self.in_flight, self.concurrency = "instant", BackendStats(), 0, 32

    async def chat(self, messages, sampling):
        prompt = messages[-1]["content"]
        self.stats.completion_tokens += 1
        if "yes or no" in prompt:
            return ChatResult("yes", 5, 1, "stop")
        if "numbered list" in prompt:
            items = [f"{i + 1}. subject {sampling.seed} part {i} of {abs(hash(prompt)) % 10 ** 8}" for i in range(5)]
            return ChatResult("\n".join(items), 5, 20, "stop")
        if "Rewrite" in prompt:
            return ChatResult(prompt.split("\n\n")[1] + " In detail.", 5, 20, "stop")
        return ChatResult(f"ok {sampling.seed} for {prompt[:40]}", 5, 1, "stop")

    async def aclose(self) -> None:
        pass


class Sleepy(Instant):
    """In-process, answers after `latency` seconds within a window of `concurrency` calls: the
    pipeline's own scheduling with no HTTP and no server process to share the CPU with."""

    def __init__(self, latency: float, concurrency: int) -> None:
        super().__init__()
        from nemotron.sdg.backends.limiter import AdaptiveLimiter

        self.latency, self.concurrency = latency, concurrency
        self.limiter = AdaptiveLimiter(ConcurrencyConfig(max_concurrency=concurrency, adaptive=False))
        self.log: list[tuple[float, float]] = []

    @property
    def in_flight(self) -> int:
        return self.limiter.in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        pass

    async def chat(self, messages, sampling):
        async with self.limiter.slot():
            start = time.monotonic()
            await asyncio.sleep(self.latency)
            result = await super().chat(messages, sampling)
            self.log.append((start, time.monotonic()))
            return result


def scheduling(latency: float, concurrency: int, calls: int) -> None:
    chat = Sleepy(latency, concurrency)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        asyncio.run(Pipeline(sft_config(calls, concurrency), out, {"generator": chat}, progress=False).run())
        elapsed = time.perf_counter() - start
    average, window, _ = held(chat.log, concurrency)
    ratio = average / concurrency
    print(f"   c={concurrency:<4} in-process {latency * 1000:g} ms backend: in flight {average:7.2f} / {concurrency} = "
          f"{ratio:6.1%} over {window:.1f} s steady; {len(chat.log)} calls in {elapsed:.1f} s "
          f"-> {'PASS' if ratio >= 0.95 else 'FAIL'} (>= 95%)")


def overhead(calls: int) -> tuple[float, float, int]:
    """(seconds per model call, CPU seconds per model call, calls) of a whole sft_prompts run."""
    with tempfile.TemporaryDirectory() as out:
        before = cpu()
        start = time.perf_counter()
        summary = asyncio.run(Pipeline(sft_config(calls, 32), out, {"generator": Instant()}, progress=False).run())
        wall = time.perf_counter() - start
        used = cpu() - before
    made = sum(s["usage"]["calls"] for s in summary["stages"].values())
    return wall / made, used / made, made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the stand-in's fixed answer time")
    parser.add_argument("--seconds", type=float, default=10.0, help="steady load per measurement (scales the run)")
    parser.add_argument("--error-rate", type=float, default=0.3)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument("--endpoint-latency-ms", type=float, default=500.0,
                        help="answer time in the endpoints test (long enough that the CPU is no limit)")
    parser.add_argument("--endpoint-concurrency", type=int, default=16)
    parser.add_argument("--no-reference", action="store_true", help="skip the bare httpx loop")
    parser.add_argument("--fixed-window", action="store_true",
                        help="no adaptive window (on a CPU-starved client, slow replies are the client's own fault)")
    args = parser.parse_args()
    ADAPTIVE[0] = not args.fixed_window
    latency = args.latency_ms / 1000
    levels = [int(c) for c in args.concurrency.split(",")]
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} (shared machine: other work competes); "
          f"stand-in answers after {args.latency_ms:g} ms")
    # One macro-topic call of sft_prompts makes about 4,300 model calls against the stand-in.
    scale = lambda c, s: max(1, round(s * c / latency / 4300))  # noqa: E731
    print("-- whole sft_prompts pipeline (14 stages), share of the window in flight")
    for c in levels:
        occupancy(latency, c, scale(c, args.seconds), 0.0, not args.no_reference)
    for c in levels[:1]:
        occupancy(latency, c, scale(c, args.seconds), args.error_rate, False)
    print("-- the pipeline's scheduling alone (no HTTP, no server process), whole sft_prompts pipeline")
    for c in levels:
        scheduling(latency, c, max(1, round(args.seconds * c / latency / 2300)))
    if args.endpoints > 1:
        print(f"-- one model on {args.endpoints} endpoints (replicas) vs one; stand-ins answering after "
              f"{args.endpoint_latency_ms:g} ms")
        endpoints_scaling(args.endpoint_latency_ms / 1000, args.endpoint_concurrency, args.endpoints)
    per_call, cpu_per_call, made = overhead(10)
    print(f"-- pipeline overhead on an instant in-process backend (sft_prompts, {made} calls): "
          f"{per_call * 1000:.3f} ms per call wall, {cpu_per_call * 1000:.3f} ms CPU (cache + fsync'd results + "
          f"collection with dedup) -> {'PASS' if per_call < 1e-3 else 'FAIL'} (< 1 ms)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
