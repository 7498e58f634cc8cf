"""How much of its configured concurrency the SDG pipeline keeps in flight, and its own overhead.

    nice python benchmarks/sdg_overhead.py [--concurrency 64,256] [--latency-ms 200] [--seconds 10]

A stand-in OpenAI-compatible server (a subprocess on 127.0.0.1 that answers every chat completion
after a fixed delay, computing nothing; list prompts get numbered lists, the classifier "yes",
revisions the prompt with more words) serves the ready-made `sft_prompts` pipeline, all 14
stages, through the HTTP backend. The stand-in is as cheap as a fast server's front end: an
asyncio.Protocol HTTP/1.1 keep-alive server (uvloop when installed), each reply sent by a timer,
no task per request; its CPU per request is printed. It logs when each request arrived and left.

1. Whole pipeline: the time-weighted number of requests the server held over the steady part of
   the run (from when the window first filled to the last arrival: the pipeline's final drain,
   when less work is left than the window holds, is inside it), divided by the configured
   concurrency; for each concurrency, and against a bare loop of the same HTTP client (C workers
   posting back to back, no pipeline) on the same server as the reference.
2. The same with `--error-rate` (default 30%) of the calls answered 503 at once.
3. Several endpoints: the same pipeline against N servers listed as one model's endpoints, each
   with the per-endpoint concurrency: throughput against one server (about N x expected).
4. Overhead: the pipeline against an in-process backend that answers instantly; the run's wall
   time (call cache, fsync'd result files, collection with filters and MinHash dedup, progress)
   divided by the number of model calls.

Every run uses the event loop `sdg run` uses (sdg/loop.py: uvloop where installed, aiohttp's request
bodies written at once on Python < 3.12); `--event-loop asyncio` measures asyncio's own.

Client and server share the machine: at concurrency C and latency L the pipeline must turn
C / L requests a second around (1,280 at 256 and 200 ms), and each costs the client's CPU per
request (printed, with the server's). The CPU this process actually gets is measured (a busy loop
timed against the wall clock) and printed with the request rate it would allow: on a shared
machine that, not the scheduling, is what caps the high-concurrency figures.
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
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from nemotron.sdg.backends import BackendStats, ChatResult
from nemotron.sdg.backends.http import HttpClient, OpenAIChat, RetryConfig
from nemotron.sdg.backends.limiter import ConcurrencyConfig
from nemotron.sdg.config import parse_config
from nemotron.sdg.configs import load
from nemotron.sdg import loop as event_loop
from nemotron.sdg.constraints import load_checkers
from nemotron.sdg.pipeline import Pipeline

SERVER = r'''
import asyncio, hashlib, json, random, re, sys, time
latency, error_rate = float(sys.argv[1]), float(sys.argv[2])
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
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

def answer(data):
    request = json.loads(data)
    text = reply(request["messages"][-1]["content"] + str(request.get("seed")))
    body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                       "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 8}}).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body

def plain(status, body):
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body

BUSY = plain(b"503 Service Unavailable", b'{"error": {"message": "busy"}}')
MODELS = plain(b"200 OK", b'{"data": []}')

class Http(asyncio.Protocol):
    # HTTP/1.1 keep-alive, requests parsed from the bytes as they come; a reply leaves `latency`
    # seconds after its request arrived, on a timer (no task per request).
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            i = head.lower().find(b"content-length:")
            length = int(head[i + 15:].split(b"\r\n", 1)[0]) if i >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            data, self.buffer = self.buffer[end + 4:end + 4 + length], self.buffer[end + 4 + length:]
            arrived = time.monotonic()
            if head.startswith(b"GET /log"):
                self.transport.write(plain(b"200 OK", json.dumps(log).encode()))
                log.clear()
            elif head.startswith(b"GET"):
                self.transport.write(MODELS)
            elif rng.random() < error_rate:
                self.transport.write(BUSY)
                log.append((arrived, time.monotonic()))
            else:
                loop.call_later(latency, self.reply, arrived, data)

    def reply(self, arrived, data):
        if not self.transport.is_closing():
            self.transport.write(answer(data))
            log.append((arrived, time.monotonic()))

async def main():
    global loop
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], "uvloop" if "uvloop" in sys.modules else "asyncio", flush=True)
    await server.serve_forever()

asyncio.run(main())
'''


class StandIn:
    """The stand-in server as a subprocess."""

    def __init__(self, latency: float, error_rate: float = 0.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(latency), str(error_rate)],
                                     stdout=subprocess.PIPE)
        port, self.loop = self.proc.stdout.readline().decode().split()
        self.url = f"http://127.0.0.1:{int(port)}/v1"

    def cpu(self) -> float:
        """CPU seconds the server process has used (Linux /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> list[tuple[float, float]]:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/log", timeout=60) as reply:
            return json.loads(reply.read())

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def held(log: list[tuple[float, float]], concurrency: int, drain: bool = True) -> tuple[float, float, float]:
    """(average requests held in the steady window, its length in s, requests/s overall). The steady
    window runs from the C-th arrival (the window could first be full) to the last arrival, or with
    `drain` False to the C-th last (after it, fewer requests than the window holds were still to
    come: the pipeline's final drain, whose length the data's dependencies set)."""
    arrivals = sorted(a for a, _ in log)
    c = min(concurrency, len(arrivals))
    start, end = arrivals[c - 1], arrivals[-1] if drain else arrivals[max(c - 1, len(arrivals) - c)]
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
LOOP = ["auto"]  # the event loop every run uses (`event_loop` of a config): auto, uvloop, asyncio


def run(main):
    return event_loop.run(main, LOOP[0])


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
              f"back slower than the fastest seen, or too many failed)")
    return elapsed, chat


async def bare_client(url: str, requests: int, concurrency: int) -> float:
    """C workers posting back to back through the pipeline's HTTP client: its own ceiling."""
    client = HttpClient(url, concurrency=ConcurrencyConfig(max_concurrency=concurrency, adaptive=False),
                        retry=RetryConfig(timeout=60))
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "max_tokens": 16}
    left = iter(range(requests))

    async def worker():
        for _ in left:
            await client.post("/chat/completions", body)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.aclose()
    return elapsed


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_share(seconds: float = 1.0) -> float:
    """Share of one core this process gets right now: CPU time of a busy loop over its wall time."""
    start, before = time.perf_counter(), cpu()
    while time.perf_counter() - start < seconds:
        sum(range(1000))
    return (cpu() - before) / (time.perf_counter() - start)


def occupancy(latency: float, concurrency: int, calls: int, error_rate: float, reference: bool) -> float:
    """The steady share of the window in flight; prints the figures behind it."""
    with StandIn(latency, error_rate) as server:
        label = f"c={concurrency}" + (f", {error_rate:.0%} answered 503" if error_rate else "")
        if reference:
            server.log()
            before, server_before = cpu(), server.cpu()
            run(bare_client(server.url, 6 * concurrency, concurrency))
            log = server.log()
            average, window, rate = held(log, concurrency)
            print(f"   {label:<24} bare client loop (reference): in flight {average:7.2f} / {concurrency} = "
                  f"{average / concurrency:6.1%} over {window:.1f} s steady, {rate:5.0f} req/s; client CPU "
                  f"{(cpu() - before) * 1000 / len(log):.3f} ms/request, server {(server.cpu() - server_before) * 1000 / len(log):.3f}")
        server.log()
        share = cpu_share()
        before, server_before = cpu(), server.cpu()
        elapsed, chat = run(pipeline_over_http([server.url], calls, concurrency))
        used, server_used = cpu() - before, server.cpu() - server_before
        log = server.log()
        average, window, rate = held(log, concurrency)
        ratio = average / concurrency
        target = 0.90 if error_rate else 0.95
        stats = chat.stats
        per_request = used / len(log)
        print(f"   {label:<24} sft_prompts pipeline:        in flight {average:7.2f} / {concurrency} = {ratio:6.1%} "
              f"over {window:.1f} s steady, {rate:5.0f} req/s; {len(log)} requests ({stats.retries} retries, "
              f"{stats.failures} given up) in {elapsed:.1f} s -> {'PASS' if ratio >= target else 'FAIL'} "
              f"(>= {target:.0%})")
        needed = concurrency / latency
        print(f"   {'':<24} client CPU {per_request * 1000:.3f} ms/request (server {server_used * 1000 / len(log):.3f}); "
              f"this process got {share:.0%} of a core just before (busy loop), enough for "
              f"{share / per_request:5.0f} req/s; a full window needs {needed:.0f} req/s (load average "
              f"{os.getloadavg()[0]:.1f})" + (f"; the client's event loop ran late {chat.client.lag.stalled / elapsed:.1%} "
                                              f"of the time (busy, or waiting for a core), delaying every reply it read"
                                              if ADAPTIVE[0] else ""))  # the lag is timed for the adaptive window
        whole = sum(d - a for a, d in log) / elapsed
        body, body_window, _ = held(log, concurrency, drain=False)
        print(f"   {'':<24} without the final drain ({window - body_window:.1f} s from the {concurrency}-th last "
              f"arrival on): {body / concurrency:6.1%}; over the whole run (ramp-up and drain included): "
              f"{whole / concurrency:6.1%} held by the server, {chat.client_occupancy / concurrency:6.1%} of the "
              f"window taken by the pipeline's calls")
    return ratio


def endpoints_scaling(latency: float, concurrency: int, count: int) -> None:
    """A small sft_prompts run (4 macro topics) on 1 and on `count` endpoints of `concurrency` each."""
    with ExitStack() as stack:
        servers = [stack.enter_context(StandIn(latency)) for _ in range(count)]
        rates = []
        for n in (1, count):
            for s in servers:
                s.log()
            elapsed, chat = run(pipeline_over_http([s.url for s in servers[:n]], 1, concurrency, topics=4))
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
        run(Pipeline(sft_config(calls, concurrency), out, {"generator": chat}, progress=False).run())
        elapsed = time.perf_counter() - start
    average, window, _ = held(chat.log, concurrency)
    body, body_window, _ = held(chat.log, concurrency, drain=False)
    ratio = average / concurrency
    print(f"   c={concurrency:<4} in-process {latency * 1000:g} ms backend: in flight {average:7.2f} / {concurrency} = "
          f"{ratio:6.1%} over {window:.1f} s steady ({body / concurrency:6.1%} without the final "
          f"{window - body_window:.1f} s drain); {len(chat.log)} calls in {elapsed:.1f} s "
          f"-> {'PASS' if ratio >= 0.95 else 'FAIL'} (>= 95%)")


def overhead(calls: int) -> tuple[float, float, int]:
    """(seconds per model call, CPU seconds per model call, calls) of a whole sft_prompts run."""
    with tempfile.TemporaryDirectory() as out:
        before = cpu()
        start = time.perf_counter()
        summary = run(Pipeline(sft_config(calls, 32), out, {"generator": Instant()}, progress=False).run())
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
    parser.add_argument("--no-reference", action="store_true", help="skip the bare client loop")
    parser.add_argument("--event-loop", choices=event_loop.EVENT_LOOPS, default="auto",
                        help="the client's event loop, as a config's `event_loop` (auto: uvloop where installed)")
    parser.add_argument("--fixed-window", action="store_true",
                        help="no adaptive window (the default adapts, as `sdg run` does)")
    args = parser.parse_args()
    ADAPTIVE[0] = not args.fixed_window
    LOOP[0] = args.event_loop
    latency = args.latency_ms / 1000
    levels = [int(c) for c in args.concurrency.split(",")]
    with StandIn(latency) as probe:
        loop = probe.loop
    before, start = cpu(), time.perf_counter()
    load_checkers()  # what every run of a pipeline with constraint checks loads once, before it starts
    print(f"loading the constraint checkers' libraries (NLTK, langdetect), once per process before a run: "
          f"{time.perf_counter() - start:.1f} s ({cpu() - before:.1f} s CPU)")
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} (shared machine: other work competes); "
          f"this process gets {cpu_share():.0%} of a core; client on {event_loop.loop_name(LOOP[0])}'s event loop, "
          f"stand-in on {loop}'s, answering after "
          f"{args.latency_ms:g} ms")
    # One macro-topic call of sft_prompts makes about 4,300 model calls against the stand-in.
    scale = lambda c, s: max(1, round(s * c / latency / 4300))  # noqa: E731
    print("-- whole sft_prompts pipeline (14 stages), share of the window in flight")
    for c in levels:
        occupancy(latency, c, scale(c, args.seconds), 0.0, not args.no_reference)
    for c in levels[:1]:
        occupancy(latency, c, scale(c, args.seconds), args.error_rate, False)
    print("-- the pipeline's scheduling alone (no HTTP, no server process), whole sft_prompts pipeline")
    for c in levels:
        # The in-process backend answers lists with 5 items: one macro-topic call makes about 1,340 calls.
        scheduling(latency, c, max(1, round(args.seconds * c / latency / 1340)))
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
