"""Routing under SLA, measured: a primary killed at 200 req/s, and hedging against a heavy tail.

    .venv/bin/python bench/routing.py [--rate 200] [--seconds 6] [--hedge-requests 400]

Runs the gateway (`tokenway serve`) and the simulated upstreams (`tokenway sim`) as separate
processes on loopback; the primary upstream has a process of its own so that it can be killed
with SIGKILL mid-load. Prints one JSON document and a summary:

- failover: failed requests, p50/p99 latency before the kill and in the switch window (from the
  kill to one second after the breaker ejected the primary), and the detection time (kill to
  ejection, read from the gateway's `tokenway_target_ejections_total`);
- hedging: p99 time to first token of streamed requests to a provider whose first token is 10x
  late 5% of the time, without and with hedging (after the target's learned p95), and the
  extra upstream cost hedging paid, from the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from harness import ROOT, Processes, free_port, percentile, wait_port, write_yaml

KEY = "sk-bench-routing"
CHAT = "{}/v1/chat/completions"
FAST = {"ttft_ms": 5, "tokens_per_s": 4000, "output_tokens": 16, "prefix_cache": False}
TAIL = {**FAST, "ttft_ms": 40, "slow_rate": 0.05, "slow_factor": 10, "seed": 3}


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {n: free_port() for n in ("primary", "secondary", "tail", "backup")}
        self.gw_port = free_port()
        self.procs = Processes()
        self.ledger = tmp / "ledger.db"

    def sims(self, names: list[str]) -> dict[str, Any]:
        scen = {"primary": FAST, "secondary": FAST, "tail": TAIL, "backup": {**FAST, "ttft_ms": 40}}
        return {
            "sim": [
                {"name": n, "kind": "openai", "port": self.ports[n], "scenario": scen[n]}
                for n in names
            ]
        }

    def gateway(self) -> dict[str, Any]:
        def target(n: str) -> dict[str, str]:
            return {"provider": n, "model": "gpt-4o-mini"}

        return {
            "listen": f"127.0.0.1:{self.gw_port}",
            "storage": {"ledger": f"sqlite:///{self.ledger}"},
            "server": {"log_level": "warning"},
            "providers": [
                {"name": n, "kind": "openai", "base_url": f"http://127.0.0.1:{p}/v1"}
                for n, p in self.ports.items()
            ],
            "models": [
                {"name": "core", "targets": [target("primary"), target("secondary")]},
                {"name": "tail-plain", "targets": [target("tail"), target("backup")]},
                {
                    "name": "tail-hedged",
                    "targets": [target("tail"), target("backup")],
                    "hedge": {"default_ms": 100},
                },
            ],
            "prices": [
                {"provider": n, "model": "gpt-4o-mini", "input": 0.15, "output": 0.6}
                for n in self.ports
            ],
            "keys": [{"name": "bench", "key": KEY}],
        }

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return self.procs.spawn(*args)

    def start(self) -> None:
        self.primary = self.spawn(
            "sim", "--config", str(write_yaml(self.tmp / "p.yaml", self.sims(["primary"])))
        )
        rest = self.sims(["secondary", "tail", "backup"])
        self.spawn("sim", "--config", str(write_yaml(self.tmp / "r.yaml", rest)))
        for p in self.ports.values():
            wait_port(p)
        self.spawn("serve", "--config", str(write_yaml(self.tmp / "g.yaml", self.gateway())))
        wait_port(self.gw_port)

    def stop(self) -> None:
        self.procs.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gw_port}"


async def ejections(session: aiohttp.ClientSession, url: str, target: str) -> float:
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("tokenway_target_ejections_total") and f'target="{target}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def failover(b: Bench, rate: float, seconds: float) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    body = json.dumps(
        {"model": "core", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
    )
    results: list[tuple[float, float, int]] = []
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def one(t0: float) -> None:
            try:
                async with session.post(
                    b.url + "/v1/chat/completions", data=body, headers=headers
                ) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError:
                status = 0
            results.append((t0, time.perf_counter() - t0, status))

        for _ in range(20):  # warm the connections
            await one(time.perf_counter())
        results.clear()
        start = time.perf_counter()
        kill_at = start + seconds / 3
        killed: float | None = None
        detected: float | None = None
        tasks = []
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            if killed is None and time.perf_counter() >= kill_at:
                b.primary.send_signal(signal.SIGKILL)
                killed = time.perf_counter()
            if (
                killed is not None
                and detected is None
                and i % 4 == 0
                and await ejections(session, b.url, "primary/gpt-4o-mini") > 0
            ):
                detected = time.perf_counter()
            tasks.append(asyncio.create_task(one(time.perf_counter())))
        await asyncio.gather(*tasks)
    assert killed is not None
    detection = (detected - killed) if detected is not None else float("nan")
    switch_end = (detected or killed) + 1.0
    normal = [lat for t0, lat, _ in results if start + 0.3 <= t0 < killed]
    switch = [lat for t0, lat, _ in results if killed <= t0 < switch_end]
    failed = sum(1 for *_, s in results if s != 200)
    p99_normal, p99_switch = percentile(normal, 0.99), percentile(switch, 0.99)
    return {
        "requests": len(results),
        "rate_per_s": rate,
        "failed": failed,
        "p50_normal_ms": percentile(normal, 0.5) * 1000,
        "p99_normal_ms": p99_normal * 1000,
        "p99_switch_ms": p99_switch * 1000,
        "detection_ms": detection * 1000,
        "bound_ms": (2 * p99_normal + max(detection, 0)) * 1000,
        "within_bound": p99_switch <= 2 * p99_normal + max(detection, 0),
    }


async def ttfts(b: Bench, model: str, n: int, concurrency: int) -> list[float]:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    out: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> None:
            body = json.dumps(
                {
                    "model": model,
                    "messages": [{"role": "user", "content": f"question {i}"}],
                    "max_tokens": 16,
                    "stream": True,
                }
            )
            async with sem:
                t0 = time.perf_counter()
                async with session.post(
                    b.url + "/v1/chat/completions", data=body, headers=headers
                ) as r:
                    first = None
                    async for line in r.content:
                        if first is None and line.startswith(b"data: {") and b'"content"' in line:
                            first = time.perf_counter() - t0
                    out.append(first if first is not None else float("inf"))

        await asyncio.gather(*(one(i) for i in range(n)))
    return out


def ledger_cost(path: Path, model: str) -> tuple[Decimal, int]:
    sys.path.insert(0, str(ROOT / "src"))
    from tokenway.accounting.ledger import read_requests

    rows = [r for r in read_requests(f"sqlite:///{path}") if r["model"] == model]
    return sum((r["cost_usd"] for r in rows), Decimal(0)), len(rows)


async def hedging(b: Bench, n: int) -> dict[str, Any]:
    await ttfts(b, "tail-plain", 40, 4)  # warm-up: the tail target's p95 is learned
    plain = await ttfts(b, "tail-plain", n, 8)
    await ttfts(b, "tail-hedged", 40, 4)
    hedged = await ttfts(b, "tail-hedged", n, 8)
    await asyncio.sleep(1.0)  # the ledger writer lingers a little
    cost_plain, n_plain = ledger_cost(b.ledger, "tail-plain")
    cost_hedged, n_hedged = ledger_cost(b.ledger, "tail-hedged")
    per_plain, per_hedged = cost_plain / n_plain, cost_hedged / n_hedged
    p99p, p99h = percentile(plain, 0.99), percentile(hedged, 0.99)
    return {
        "requests_each": n,
        "p50_ttft_plain_ms": percentile(plain, 0.5) * 1000,
        "p99_ttft_plain_ms": p99p * 1000,
        "p50_ttft_hedged_ms": percentile(hedged, 0.5) * 1000,
        "p99_ttft_hedged_ms": p99h * 1000,
        "p99_ttft_cut_pct": (1 - p99h / p99p) * 100,
        "extra_cost_pct": float((per_hedged / per_plain - 1) * 100),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--hedge-requests", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(Path(tmp))
        b.start()
        try:
            hedge = asyncio.run(hedging(b, args.hedge_requests))
            fail = asyncio.run(failover(b, args.rate, args.seconds))
        finally:
            b.stop()
    doc = {"failover": fail, "hedging": hedge}
    print(json.dumps(doc, indent=2))
    f, h = fail, hedge
    print(
        f"\nfailover at {f['rate_per_s']:.0f} req/s: {f['failed']} failed of {f['requests']}; "
        f"p99 {f['p99_normal_ms']:.1f} ms normal, {f['p99_switch_ms']:.1f} ms during the switch "
        f"(bound 2x normal + detection = {f['bound_ms']:.1f} ms; "
        f"detection {f['detection_ms']:.0f} ms)"
        f"\nhedging: p99 TTFT {h['p99_ttft_plain_ms']:.1f} -> {h['p99_ttft_hedged_ms']:.1f} ms "
        f"({h['p99_ttft_cut_pct']:.0f}% cut) for {h['extra_cost_pct']:.1f}% extra cost",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
