"""Broker client benchmark: pooled async client vs one new connection per call (the SDK ≤ 1.0.50 way).

The paper exchange runs as its own process (``algomirror simulator``, so it does not share this
interpreter's GIL with the client under test) with 20 ms injected latency on every call and its rate
limits disabled. Runs of ``quotes``:

1. pooled: our :class:`OpenAlgoClient` on one keep-alive pool, ``--concurrency`` calls in flight, once
   on the aiohttp transport (the engine's) and once on the httpx one (the client's previous transport);
   the client's CPU time per call (``time.process_time`` of this process: the exchange runs in its
   own) is printed for both;
2. per-call: module-level ``httpx.post`` for each call, sequential, as the official SDK ≤ 1.0.50 did
   (each call builds a client, an SSL context and a TCP connection). At 50–120 ms a call this phase
   alone would take minutes for 1,000 calls, so by default it measures ``--baseline-calls`` (250) and
   scales the time linearly to ``--calls`` (the calls are sequential and independent, so the scaling
   is exact up to noise); ``--baseline-calls 1000`` measures all of them;
3. pooled, sequential (fewer calls): isolates what connection reuse alone saves per call.

Prints the figures and the ratio (target ≥ 3×). Never fails on timing. The last line is
``client cpu per call X.XXX ms`` for the aiohttp transport.
Usage: ``python bench/client_pool.py [--calls 1000] [--concurrency 32] [--latency-ms 20]``
(add ``--baseline-calls 1000`` to measure every per-call request)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from algomirror.broker.client import OpenAlgoClient, RetryPolicy, Timeouts
from algomirror.broker.ratelimit import RateLimits
from algomirror.broker.transport import HostPool, Transport
from algomirror.broker.transport_httpx import HttpxHostPool

SYMBOL, EXCHANGE = "NIFTY", "NSE_INDEX"


def make_pool(transport: str, concurrency: int) -> Transport:
    if transport == "httpx":
        return HttpxHostPool(max_connections=max(concurrency, 1))
    return HostPool(max_connections=max(concurrency, 1))


async def pooled(
    url: str, key: str, calls: int, concurrency: int, transport: str = "aiohttp"
) -> tuple[float, list[float], float]:
    """Wall time, per-call latencies and client CPU seconds for ``calls`` quotes, ``concurrency`` in
    flight, on the named transport."""
    latencies: list[float] = []
    pool = make_pool(transport, concurrency)
    try:
        client = OpenAlgoClient(
            url,
            key,
            pool=pool,
            limits=RateLimits.unlimited(),  # the exchange's limits are off for the bench
            retry=RetryPolicy(attempts=1),
            timeouts=Timeouts(connect=5.0, read=30.0),
        )
        await client.quotes(SYMBOL, EXCHANGE)  # warm-up: open the connection once
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                began = time.perf_counter()
                quote = await client.quotes(SYMBOL, EXCHANGE)
                latencies.append(time.perf_counter() - began)
                if quote.ltp is None:
                    raise RuntimeError("quote without ltp")

        cpu_started = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(calls)))
        return time.perf_counter() - started, latencies, time.process_time() - cpu_started
    finally:
        await pool.aclose()


def per_call(url: str, key: str, calls: int) -> tuple[float, list[float]]:
    """The SDK ≤ 1.0.50 way: ``httpx.post`` per call (a new TCP connection each time), sequential."""
    latencies: list[float] = []
    endpoint = f"{url}/api/v1/quotes"
    started = time.perf_counter()
    for _ in range(calls):
        began = time.perf_counter()
        response = httpx.post(
            endpoint, json={"apikey": key, "symbol": SYMBOL, "exchange": EXCHANGE}, timeout=120
        )
        latencies.append(time.perf_counter() - began)
        if response.status_code != 200 or response.json().get("status") != "success":
            raise RuntimeError(f"per-call quote failed: HTTP {response.status_code}")
    return time.perf_counter() - started, latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def line(name: str, calls: int, wall: float, latencies: list[float]) -> str:
    return (
        f"{name:<34} {calls:>5} calls  {wall:7.2f} s  {calls / wall:8.1f} calls/s  "
        f"p50 {statistics.median(latencies) * 1000:6.1f} ms  p99 {pct(latencies, 0.99):6.1f} ms"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def simulator_process() -> Iterator[tuple[str, str, str]]:
    """Start ``algomirror simulator`` (manual clock, no rate limits); yield its base URL, API key and
    control token."""
    port, ws_port = _free_port(), _free_port()
    command = [
        sys.executable, "-c", "from algomirror.cli import main; main()", "simulator",
        "--port", str(port), "--ws-port", str(ws_port), "--accounts", "1",
        "--clock", "manual", "--no-rate-limits", "--control",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        key = token = ""
        deadline = time.monotonic() + 30
        while not key and time.monotonic() < deadline:
            line_text = proc.stdout.readline()
            if not line_text:
                raise RuntimeError("paper exchange exited before printing its API key")
            if line_text.startswith("control token"):
                token = line_text.split()[-1]
            if "apikey" in line_text:
                key = line_text.split("apikey", 1)[1].strip()
        if not key:
            raise RuntimeError("paper exchange did not start within 30 s")
        yield f"http://127.0.0.1:{port}", key, token
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--baseline-calls", type=int, default=250)
    parser.add_argument("--sequential-calls", type=int, default=100)
    args = parser.parse_args()

    with simulator_process() as (url, key, token):
        httpx.post(
            f"{url}/sim/faults/latency",
            json={"ms": args.latency_ms},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).raise_for_status()
        print(f"paper exchange at {url}, {args.latency_ms:g} ms injected latency, rate limits off")

        cpu: dict[str, float] = {}
        pool_wall = 0.0
        for transport in ("httpx", "aiohttp"):
            wall, lat, spent = asyncio.run(pooled(url, key, args.calls, args.concurrency, transport))
            cpu[transport] = spent / args.calls * 1000
            name = f"pooled {transport}, {args.concurrency} in flight"
            print(line(name, args.calls, wall, lat) + f"  cpu {cpu[transport]:.3f} ms/call", flush=True)
            if transport == "aiohttp":
                pool_wall = wall

        sample = min(args.baseline_calls, args.calls)
        sample_wall, new_lat = per_call(url, key, sample)
        print(line("new connection per call, sequential", sample, sample_wall, new_lat), flush=True)
        new_wall = sample_wall * args.calls / sample
        if sample < args.calls:
            print(f"{'':<34} {args.calls:>5} calls  {new_wall:7.2f} s  (scaled from {sample} measured calls)")

        seq_wall, seq_lat, _ = asyncio.run(pooled(url, key, args.sequential_calls, 1))
        print(line("pooled aiohttp, sequential", args.sequential_calls, seq_wall, seq_lat), flush=True)

    ratio = new_wall / pool_wall
    saved = (statistics.median(new_lat) - statistics.median(seq_lat)) * 1000
    print(f"pooled client is {ratio:.1f}x faster for {args.calls} quotes (target >= 3x)")
    print(f"connection reuse alone saves {saved:.1f} ms per sequential call (median)")
    print(f"client cpu per call, httpx transport    {cpu['httpx']:.3f} ms")
    print(f"client cpu per call, aiohttp transport  {cpu['aiohttp']:.3f} ms")
    print(f"aiohttp uses {cpu['httpx'] / cpu['aiohttp']:.1f}x less client CPU per call than httpx")
    print(f"client cpu per call {cpu['aiohttp']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
