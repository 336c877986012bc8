"""Paper-exchange benchmark: REST throughput/latency and WebSocket tick fan-out on loopback.

Prints figures; never fails on timing. The exchange runs as its own process (``algomirror simulator``,
rate limits off) so the load generator does not share its interpreter lock.

1. ``quotes`` and ``placeorder`` (MARKET, alternating BUY/SELL, 3 accounts): closed-loop with 32 concurrent
   pooled connections for a few seconds → max requests/s, p50/p99; then open-loop at half that rate → p50/p99.
2. Ticks: 50 WebSocket clients, each subscribed (LTP) to the same 200 option symbols, accelerated clock
   (×20, one model step per simulated second) → frames/s delivered in total.

The exchange's CPU time per request is printed too: the load generator shares the two cores, so
requests/s is a floor; 1 / (CPU per request) is what one dedicated core would serve.

Targets (2-core machine): ≥ 1,000 quotes/s, ≥ 500 orders/s, p99 < 20 ms at half that load.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

CE = "NIFTY01DEC2626000CE"
SPEED = "2"  # accelerated clock for the tick test: 2 model steps (simulated seconds) per real second


def start_exchange(*extra: str) -> tuple[subprocess.Popen[str], str, str, list[str]]:
    exe = Path(sys.executable).with_name("algomirror")
    proc = subprocess.Popen(
        [str(exe), "simulator", "--port", "0", "--ws-port", "0", "--no-rate-limits", "--control", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    rest = ws = ""
    keys: list[str] = []
    while len(keys) < 3:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("simulator exited during start-up")
        if line.startswith("paper exchange REST"):
            rest = line.split()[-1].removesuffix("/api/v1/")
        elif line.startswith("paper exchange WS"):
            ws = line.split()[-1]
        elif line.startswith("account"):
            keys.append(line.split()[-1])
    return proc, rest, ws, keys


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the exchange process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def closed_loop(
    call: Callable[[int], Awaitable[None]], seconds: float, workers: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    counter = 0

    async def worker() -> None:
        nonlocal counter
        while time.perf_counter() < stop_at:
            counter += 1
            t0 = time.perf_counter()
            await call(counter)
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return len(latencies) / (time.perf_counter() - started), latencies


async def open_loop(call: Callable[[int], Awaitable[None]], rate: float, seconds: float) -> list[float]:
    latencies: list[float] = []
    tasks = []

    async def one(n: int) -> None:
        t0 = time.perf_counter()
        await call(n)
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    total = int(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return latencies


async def rest_bench(pid: int, rest: str, keys: list[str]) -> None:
    url = rest + "/api/v1/"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def quote(n: int) -> None:
            body = {"apikey": keys[n % 3], "symbol": CE, "exchange": "NFO"}
            async with http.post(url + "quotes", json=body) as r:
                assert r.status == 200, await r.text()
                await r.read()

        async def order(n: int) -> None:
            body = {
                "apikey": keys[n % 3],
                "strategy": "bench",
                "symbol": CE,
                "exchange": "NFO",
                "action": "BUY" if (n // 3) % 2 == 0 else "SELL",
                "quantity": "65",
                "pricetype": "MARKET",
                "product": "NRML",
            }
            async with http.post(url + "placeorder", json=body) as r:
                text = await r.text()
                assert r.status == 200, text

        for name, call in (("quotes", quote), ("placeorder", order)):
            await closed_loop(call, 0.5, 8)  # warm-up
            cpu0 = server_cpu(pid)
            rate, lat = await closed_loop(call, 4.0, 32)
            cpu_us = (server_cpu(pid) - cpu0) / len(lat) * 1e6
            half = await open_loop(call, rate / 2, 3.0)
            print(
                f"{name:<10} max {rate:7.0f} req/s  p50 {pct(lat, 0.5):6.2f} ms  "
                f"p99 {pct(lat, 0.99):6.2f} ms  | at {rate / 2:5.0f} req/s: p50 {pct(half, 0.5):5.2f} ms  "
                f"p99 {pct(half, 0.99):5.2f} ms  | server CPU {cpu_us:4.0f} us/request",
                flush=True,
            )


async def tick_bench(rest: str, ws_url: str, keys: list[str]) -> None:
    async with aiohttp.ClientSession() as http:
        symbols: list[dict[str, str]] = []
        for query, exchange in (("NIFTY 01DEC26", "NFO"), ("SENSEX 26NOV26", "BFO")):
            body = {"apikey": keys[0], "query": query, "exchange": exchange}
            async with http.post(rest + "/api/v1/search", json=body) as r:
                rows = (await r.json())["data"]
            symbols += [{"symbol": row["symbol"], "exchange": exchange} for row in rows]
        symbols = symbols[:200]
        counts = [0] * 50
        ready = asyncio.Event()
        connected = 0
        stop = asyncio.Event()

        async def client(i: int) -> None:
            nonlocal connected
            async with http.ws_connect(ws_url, max_msg_size=0) as ws:
                await ws.send_str(json.dumps({"action": "authenticate", "api_key": keys[i % 3]}))
                await ws.receive()
                await ws.send_str(json.dumps({"action": "subscribe", "symbols": symbols, "mode": 1}))
                connected += 1
                if connected == 50:
                    ready.set()
                while not stop.is_set():
                    try:
                        msg = await asyncio.wait_for(ws.receive(), 0.5)
                    except TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        return
                    if '"market_data"' in msg.data:
                        counts[i] += 1

        tasks = [asyncio.create_task(client(i)) for i in range(50)]
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.sleep(1.0)  # let snapshots drain
        base = sum(counts)
        t0 = time.perf_counter()
        await asyncio.sleep(5.0)
        delivered = sum(counts) - base
        elapsed = time.perf_counter() - t0
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(
            f"ticks      {delivered / elapsed:7.0f} frames/s delivered to 50 clients x {len(symbols)} "
            f"symbols (min client {min(counts)}, max {max(counts)} frames in total)",
            flush=True,
        )


def main() -> int:
    started = time.perf_counter()
    if "--ticks-only" not in sys.argv:
        proc, rest, ws, keys = start_exchange("--clock", "manual")
        try:
            asyncio.run(rest_bench(proc.pid, rest, keys))
        finally:
            proc.terminate()
            proc.wait(10)
    proc, rest, ws, keys = start_exchange(
        "--clock", "accelerated", "--speed", SPEED, "--start", "2026-11-25T10:00:00+05:30"
    )
    try:
        asyncio.run(tick_bench(rest, ws, keys))
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"simulator bench finished in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
