"""PostgreSQL stopped for 30 s under ~200 req/s, through the real gateway (`tokenway serve`).

Clients (the official OpenAI SDK, streamed and whole chat completions) see no error at all, and
once the database is back the ledger holds exactly one request row per response a client got:
the rows written meanwhile went through the ledger's local spool and were replayed once. The
database is a private server on a temporary port, never the shared one.

Traffic follows a fixed schedule (request i is due at i/RATE s) so that a busy machine sends
fewer requests rather than bursts; the assertions are on correctness, never on the rate. The
figures (rate achieved, rows through the spool, time to drain it) are printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx2 as httpx
import openai
import pytest
import uvloop

from tests.net import free_port, wait_http
from tests.private_pg import PrivatePostgres

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-pg-outage"
MSG = [{"role": "user", "content": "hello"}]

RATE = 200.0  # requests a second, the schedule's
DURATION_S = 45.0  # of traffic, in all
STOP_AT_S = 5.0  # PostgreSQL is stopped this far in...
DOWN_S = 30.0  # ...and started again this much later
IN_FLIGHT = 128  # most requests open at once: a slow machine falls behind, it does not pile up
LEDGER_WAIT_S = 30.0  # for the ledger to hold every row once the traffic stops
REPLAYED = re.compile(r"(\d+) (?:spooled rows|rows left in the spool) replayed")


class Gateway:
    """`tokenway serve` on a ledger in the private server, and `tokenway sim` as its upstream."""

    def __init__(self, tmp: Path, pg: PrivatePostgres) -> None:
        self.spool = tmp / "spool"
        self.ledger = f"{pg.url}?spool={self.spool}"
        sim_port, self.port = free_port(), free_port()
        sims = {
            "sim": [
                {
                    "name": "up",
                    "kind": "openai",
                    "port": sim_port,
                    "scenario": {"ttft_ms": 5, "tokens_per_s": 2000, "output_tokens": 8},
                }
            ]
        }
        gateway = {
            "listen": f"127.0.0.1:{self.port}",
            "storage": {"ledger": self.ledger},
            "server": {"log_level": "warning"},
            "providers": [
                {"name": "up", "kind": "openai", "base_url": f"http://127.0.0.1:{sim_port}/v1"}
            ],
            "models": [{"name": "m", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]}],
            "keys": [{"name": "load", "key": KEY}],
        }
        (tmp / "sims.yaml").write_text(json.dumps(sims))
        (tmp / "gw.yaml").write_text(json.dumps(gateway))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        tokenway = [sys.executable, "-m", "tokenway"]
        self.sim = subprocess.Popen(
            [*tokenway, "sim", "--config", str(tmp / "sims.yaml")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.log = tmp / "gateway.log"
        with self.log.open("wb") as log:
            self.gw = subprocess.Popen(
                [*tokenway, "serve", "--config", str(tmp / "gw.yaml")],
                env=env,
                stdout=log,
                stderr=log,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(f"http://127.0.0.1:{sim_port}/v1/models")
        wait_http(self.url + "/readyz")

    def segments(self) -> list[Path]:
        """Spool files, whichever database directory they are in."""
        return sorted(self.spool.rglob("*.jsonl"))

    def replayed(self) -> int:
        """Rows the ledger says it replayed from the spool (its log is the only witness)."""
        total = 0
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            found = REPLAYED.search(str(entry.get("msg", ""))) if isinstance(entry, dict) else None
            total += int(found.group(1)) if found else 0
        return total

    def stop(self) -> int:
        if self.gw.poll() is None:
            self.gw.send_signal(signal.SIGTERM)
        try:
            code = self.gw.wait(30)
        finally:
            if self.gw.poll() is None:
                self.gw.kill()
                self.gw.wait()
            self.sim.kill()
            self.sim.wait()
        return code


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def gateway(tmp_path: Path, pg: PrivatePostgres) -> Iterator[Gateway]:
    gw = Gateway(tmp_path, pg)
    try:
        yield gw
    finally:
        gw.stop()


@dataclass
class Run:
    """What the clients saw, and when the outage happened (monotonic seconds)."""

    ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    streamed: int = 0
    sent: int = 0
    started: float = 0.0
    ended: float = 0.0
    stopped_at: float = 0.0
    restarted_at: float = 0.0
    drained_at: float | None = None
    spooled_files: int = 0


async def one(client: openai.AsyncOpenAI, stream: bool, run: Run) -> None:
    """One chat completion; a response without an id or without its end is an error too."""
    try:
        if stream:
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=MSG, max_tokens=8, stream=True
            )
            text, finish = [], None
            async for chunk in raw.parse():
                for choice in chunk.choices:
                    text.append(choice.delta.content or "")
                    finish = choice.finish_reason or finish
            ok = bool("".join(text)) and finish is not None
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=MSG, max_tokens=8
            )
            completion = raw.parse()
            ok = bool(completion.choices and completion.choices[0].message.content)
        rid = raw.headers.get("x-tokenway-request-id")
        if not ok or not rid:
            run.errors.append(f"incomplete response (stream={stream}, request id {rid!r})")
            return
        run.ids.append(rid)
        run.streamed += stream
    except Exception as exc:
        run.errors.append(f"{type(exc).__name__}: {exc}")


async def outage(pg: PrivatePostgres, gw: Gateway, run: Run) -> None:
    """Stop PostgreSQL at STOP_AT_S for DOWN_S; then watch the spool until it is drained."""
    await asyncio.sleep(max(0.0, run.started + STOP_AT_S - time.monotonic()))
    await asyncio.to_thread(pg.stop)
    run.stopped_at = time.monotonic()
    while time.monotonic() < run.stopped_at + DOWN_S:
        run.spooled_files = max(run.spooled_files, len(gw.segments()))
        await asyncio.sleep(0.25)
    await asyncio.to_thread(pg.start)
    run.restarted_at = time.monotonic()
    end = run.restarted_at + LEDGER_WAIT_S
    while time.monotonic() < end:
        if not gw.segments():
            run.drained_at = time.monotonic()
            return
        await asyncio.sleep(0.05)


async def drive(pg: PrivatePostgres, gw: Gateway) -> Run:
    """Requests on a fixed schedule for DURATION_S, with the outage running beside them."""
    run = Run()
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=30.0)
    slots = asyncio.Semaphore(IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    async def paced(stream: bool) -> None:
        try:
            await one(client, stream, run)
        finally:
            slots.release()

    run.started = time.monotonic()
    watcher = asyncio.create_task(outage(pg, gw, run))
    for i in range(int(RATE * DURATION_S)):
        due = run.started + i / RATE
        if due > time.monotonic():
            await asyncio.sleep(due - time.monotonic())
        await slots.acquire()
        if time.monotonic() >= run.started + DURATION_S:
            slots.release()  # behind schedule: the time is up, not the count
            break
        task = asyncio.create_task(paced(stream=i % 2 == 1))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        run.sent += 1
    await asyncio.gather(*tasks)
    run.ended = time.monotonic()
    await watcher
    await client.close()
    return run


async def ledger_ids(url: str, expected: int) -> tuple[list[str], float]:
    """Request ids in the ledger once it holds `expected` rows (or more), or when the wait
    runs out; and how long the wait was."""
    t0 = time.monotonic()
    conn = await asyncpg.connect(url, timeout=10)
    try:
        while time.monotonic() < t0 + LEDGER_WAIT_S:
            count = await conn.fetchval("SELECT count(*) FROM requests")
            if count >= expected:
                break
            await asyncio.sleep(0.2)
        ids = [r[0] for r in await conn.fetch("SELECT request_id FROM requests")]
    finally:
        await conn.close()
    return ids, time.monotonic() - t0


def served_by_metrics(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tokenway_requests_total{") and 'status="200"' in line
    )


def test_no_client_error_and_one_row_per_request_through_a_30s_outage(
    pg: PrivatePostgres, gateway: Gateway
) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        run = runner.run(drive(pg, gateway))
        stored, waited = runner.run(ledger_ids(pg.url, len(run.ids)))
    served = served_by_metrics(gateway.url)
    assert gateway.stop() == 0
    elapsed = run.ended - run.started
    drained = None if run.drained_at is None else run.drained_at - run.restarted_at
    print(
        f"\npg outage: {run.sent} requests sent in {elapsed:.1f}s "
        f"({run.sent / elapsed:.1f} req/s of {RATE:.0f} scheduled), {len(run.ids)} served "
        f"({run.streamed} streamed), {len(run.errors)} errors; metrics count {served:.0f} served; "
        f"PostgreSQL down {run.restarted_at - run.stopped_at:.1f}s, "
        f"{gateway.replayed()} rows replayed from the spool (up to {run.spooled_files} files); "
        f"spool drained {drained if drained is None else round(drained, 2)}s after the restart; "
        f"ledger complete {waited:.2f}s after the last response"
    )

    assert not run.errors, f"{len(run.errors)} client errors, first: {run.errors[:3]}"
    assert len(run.ids) == run.sent
    assert run.spooled_files > 0, "the ledger never spooled: the outage was not seen"
    duplicates = [rid for rid, n in Counter(stored).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} request ids stored twice"
    missing, extra = sorted(set(run.ids) - set(stored)), sorted(set(stored) - set(run.ids))
    assert not missing, f"{len(missing)} served requests have no row, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} rows for requests no client got, e.g. {extra[:3]}"
    assert len(set(run.ids)) == len(run.ids), "two responses carried one request id"
    assert gateway.replayed() > 0
    assert run.drained_at is not None and gateway.segments() == []
