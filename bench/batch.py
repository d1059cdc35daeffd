"""A 10,000-line batch run by the gateway itself beside interactive load, measured.

    .venv/bin/python bench/batch.py [--lines 10000] [--rate 100] [--seconds 15] [--rounds 3]

Runs the gateway (`tokenway serve`, one process, SQLite ledger) and a simulated OpenAI-style
upstream (`tokenway sim`) as processes on loopback. Interactive load is open loop: `--rate`
non-streamed chat requests a second, each timed from its scheduled send time, so a gateway
that falls behind is charged for the queueing it causes. Rounds alternate: interactive load
alone for `--seconds`, then interactive load while a batch of `--lines` chat lines for the same
model and upstream runs through the gateway's own runner (not a provider's batch API), for as
long as the batch takes. Prints one JSON document and a summary: the interactive p50/p99 of
each round, the medians over rounds with and without the batch, their ratio, and each batch's
lines per second, status and ledger mode split.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import aiohttp
import openai
from harness import Processes, free_port, percentile, wait_port, write_yaml

KEY = "sk-bench-batch"
UPSTREAM = {"ttft_ms": 20, "tokens_per_s": 2000, "output_tokens": 16, "prefix_cache": False}


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sim_port = free_port()
        self.gw_port = free_port()
        self.ledger = tmp / "ledger.db"
        self.procs = Processes()

    def start(self) -> None:
        sims = {
            "sim": [{"name": "up", "kind": "openai", "port": self.sim_port, "scenario": UPSTREAM}]
        }
        gateway = {
            "listen": f"127.0.0.1:{self.gw_port}",
            "storage": {"ledger": f"sqlite:///{self.ledger}"},
            "server": {"log_level": "warning"},
            "providers": [
                {"name": "up", "kind": "openai", "base_url": f"http://127.0.0.1:{self.sim_port}/v1"}
            ],
            "models": [{"name": "chat", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]}],
            "prices": [
                {
                    "provider": "up",
                    "model": "gpt-4o-mini",
                    "input": 0.15,
                    "output": 0.6,
                    "multipliers": {"batch": 0.5},
                }
            ],
            "keys": [{"name": "bench", "key": KEY}],
        }
        self.procs.spawn("sim", "--config", str(write_yaml(self.tmp / "sim.yaml", sims)))
        wait_port(self.sim_port)
        self.procs.spawn("serve", "--config", str(write_yaml(self.tmp / "gw.yaml", gateway)))
        wait_port(self.gw_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gw_port}"


def batch_file(lines: int) -> bytes:
    out = io.StringIO()
    for i in range(lines):
        body = {
            "model": "chat",
            "messages": [{"role": "user", "content": f"Summarise record {i} in one line."}],
            "max_tokens": 16,
        }
        line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
        out.write(json.dumps({**line, "body": body}) + "\n")
    return out.getvalue().encode()


class Load:
    """Open-loop interactive requests at a fixed rate until stopped."""

    def __init__(self, session: aiohttp.ClientSession, url: str, rate: float) -> None:
        self.session = session
        self.url = url + "/v1/chat/completions"
        self.rate = rate
        self.latencies: list[float] = []
        self.errors = 0
        self.body = json.dumps(
            {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
        )
        self.headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}

    async def one(self, due: float) -> None:
        try:
            async with self.session.post(self.url, data=self.body, headers=self.headers) as r:
                await r.read()
                ok = r.status == 200
        except aiohttp.ClientError:
            ok = False
        if ok:
            self.latencies.append((time.perf_counter() - due) * 1000)
        else:
            self.errors += 1

    async def run(self, until: Any) -> None:
        """Send at `rate` until `until()` is true (checked before each send)."""
        start = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        i = 0
        while not until():
            due = start + i / self.rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(self.one(due)))
            i += 1
        await asyncio.gather(*tasks)

    def figures(self) -> dict[str, Any]:
        return {
            "requests": len(self.latencies) + self.errors,
            "errors": self.errors,
            "p50_ms": round(percentile(self.latencies, 0.50), 2),
            "p99_ms": round(percentile(self.latencies, 0.99), 2),
        }


async def alone(session: aiohttp.ClientSession, url: str, rate: float, seconds: float) -> Any:
    load = Load(session, url, rate)
    end = time.perf_counter() + seconds
    await load.run(lambda: time.perf_counter() >= end)
    return load.figures()


async def with_batch(
    session: aiohttp.ClientSession,
    client: openai.AsyncOpenAI,
    url: str,
    rate: float,
    seconds: float,
    content: bytes,
) -> dict[str, Any]:
    f = await client.files.create(file=("lines.jsonl", content), purpose="batch")
    batch = await client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status == "validating":
        await asyncio.sleep(0.2)
        batch = await client.batches.retrieve(batch.id)
    started = time.perf_counter()
    state: dict[str, Any] = {"batch": batch, "done": False}

    async def watch() -> None:
        while True:
            b = await client.batches.retrieve(batch.id)
            state["batch"] = b
            if b.status in ("completed", "failed", "cancelled", "expired"):
                state["done"] = True
                state["seconds"] = time.perf_counter() - started
                return
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch())
    load = Load(session, url, rate)
    # at least `seconds` of load, and for as long as the batch runs
    floor = time.perf_counter() + seconds
    await load.run(lambda: state["done"] and time.perf_counter() >= floor)
    await watcher
    b = state["batch"]
    counts = b.request_counts
    return {
        **load.figures(),
        "batch_id": b.id,
        "batch_status": b.status,
        "batch_completed": counts.completed if counts else None,
        "batch_failed": counts.failed if counts else None,
        "batch_seconds": round(state["seconds"], 2),
        "batch_lines_per_s": round((counts.completed if counts else 0) / state["seconds"], 1),
    }


def ledger_modes(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT mode, count(*), sum(CAST(cost_usd AS REAL)) FROM requests GROUP BY mode"
        ).fetchall()
    return {mode: {"rows": n, "cost_usd": round(cost or 0.0, 6)} for mode, n, cost in rows}


async def run(b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    content = batch_file(args.lines)
    client = openai.AsyncOpenAI(base_url=b.url + "/v1", api_key=KEY, max_retries=2)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await alone(session, b.url, args.rate, 3)  # warm-up, discarded
        rounds: list[dict[str, Any]] = []
        for i in range(args.rounds):
            rounds.append(
                {"round": i, "batch": False, **await alone(session, b.url, args.rate, args.seconds)}
            )
            rounds.append(
                {
                    "round": i,
                    "batch": True,
                    **await with_batch(session, client, b.url, args.rate, args.seconds, content),
                }
            )
    await client.close()
    without = [r["p99_ms"] for r in rounds if not r["batch"]]
    beside = [r["p99_ms"] for r in rounds if r["batch"]]
    return {
        "rate": args.rate,
        "lines": args.lines,
        "rounds": rounds,
        "p99_ms_without_batch_median": median(without),
        "p99_ms_with_batch_median": median(beside),
        "p99_ratio": round(median(beside) / median(without), 3),
        "ledger": ledger_modes(b.ledger),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokenway-bench-batch-") as tmp:
        b = Bench(Path(tmp))
        try:
            b.start()
            doc = asyncio.run(run(b, args))
        finally:
            b.procs.stop()
    print(json.dumps(doc, indent=2))
    for r in doc["rounds"]:
        extra = ""
        if r["batch"]:
            extra = (
                f"  batch {r['batch_status']}: {r['batch_completed']} lines in "
                f"{r['batch_seconds']} s ({r['batch_lines_per_s']}/s)"
            )
        label = "with batch" if r["batch"] else "alone     "
        print(
            f"round {r['round']} {label}: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"{r['errors']} errors of {r['requests']}{extra}",
            file=sys.stderr,
        )
    print(
        f"interactive p99 at {doc['rate']:g} req/s, median of {len(doc['rounds']) // 2} rounds: "
        f"{doc['p99_ms_without_batch_median']} ms alone, {doc['p99_ms_with_batch_median']} ms "
        f"beside a {doc['lines']}-line batch (x{doc['p99_ratio']}; target <= x1.10)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
