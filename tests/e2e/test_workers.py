"""`tokenway serve --workers 3` on one port, limits and budgets shared through the real Redis:
the three processes behave as one gateway."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import redis

from tests.net import free_port, wait_http
from tokenway.accounting.export import export

ROOT = Path(__file__).resolve().parents[2]
MSG = [{"role": "user", "content": "hello"}]


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.prefix = f"tokenway-test:{uuid.uuid4().hex}:"
        self.sim_port, self.port = free_port(), free_port()
        self.ledger = f"sqlite:///{tmp / 'ledger.db'}"
        sims = {
            "sim": [
                {
                    "name": "up",
                    "kind": "openai",
                    "port": self.sim_port,
                    "scenario": {"ttft_ms": 2, "tokens_per_s": 20000, "output_tokens": 8},
                }
            ]
        }
        gateway: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "storage": {
                "ledger": self.ledger,
                "state": "redis://127.0.0.1:6379/0",
                "state_prefix": self.prefix,
                # this test is about sharing, not outages: a busy CI machine must not look
                # like a dead Redis
                "state_timeout_ms": 3000,
            },
            "server": {"log_level": "warning"},
            "providers": [
                {
                    "name": "up",
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{self.sim_port}/v1",
                }
            ],
            "models": [{"name": "m", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]}],
            "prices": [{"provider": "up", "model": "gpt-4o-mini", "input": 0.15, "output": 0.6}],
            "keys": [
                {"name": "limited", "key": "sk-limited", "rpm": 100},
                {"name": "budgeted", "key": "sk-budgeted", "budget_usd": 0.0001},
            ],
        }
        (tmp / "sims.yaml").write_text(json.dumps(sims))
        (tmp / "gw.yaml").write_text(json.dumps(gateway))
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "tokenway", "sim", "--config", str(tmp / "sims.yaml")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        serve = ["serve", "--workers", "3", "--config", str(tmp / "gw.yaml")]
        self.log = tmp / "gateway.log"
        with self.log.open("wb") as log:
            # a session of its own, so that a test can reach the workers as one group
            self.gw = subprocess.Popen(
                [sys.executable, "-m", "tokenway", *serve],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(f"http://127.0.0.1:{self.sim_port}/v1/models")
        wait_http(self.url + "/readyz")

    def stop(self) -> int:
        self.gw.send_signal(signal.SIGTERM)
        try:
            # uvicorn's graceful shutdown alone may take 30 s on a busy machine
            code = self.gw.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.gw.pid, signal.SIGKILL)
            self.gw.wait()
            code = -1
            print("gateway did not stop within 90 s; its log:\n" + self.log.read_text())
        self.sim.kill()
        self.sim.wait()
        r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in r.scan_iter(match=self.prefix + "*"):
            r.delete(key)
        return code


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not running on 127.0.0.1:6379 ({exc}); see .ci/run")
    f = Fleet(tmp_path_factory.mktemp("fleet"))
    yield f
    assert f.stop() == 0


async def burst(url: str, key: str, n: int) -> list[httpx.Response | BaseException]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    out: list[Any] = []

    async def one() -> None:
        try:
            r = await client.chat.completions.with_raw_response.create(
                model="m", messages=MSG, max_tokens=8
            )
            out.append(r.http_response)
        except openai.APIStatusError as exc:
            out.append(exc)

    await asyncio.gather(*(one() for _ in range(n)))
    await client.close()
    return out


def test_three_workers_share_one_rpm_limit(fleet: Fleet) -> None:
    t0 = time.perf_counter()
    out = asyncio.run(burst(fleet.url, "sk-limited", 300))
    elapsed = time.perf_counter() - t0
    ok = [r for r in out if isinstance(r, httpx.Response)]
    refused = [e for e in out if isinstance(e, openai.RateLimitError)]
    assert len(ok) + len(refused) == 300, [e for e in out if not isinstance(e, httpx.Response)][:3]
    assert len(ok) == 100, f"{len(ok)} admitted in {elapsed:.2f}s"
    assert all(int(e.response.headers["retry-after"]) >= 1 for e in refused)
    # more than one worker served: request ids carry a per-process prefix
    assert len({r.headers["x-tokenway-request-id"][:16] for r in ok}) >= 2
    # /metrics on any worker reports all of them together
    text = httpx.get(fleet.url + "/metrics").text
    served = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tokenway_requests_total{") and 'status="200"' in line
    )
    assert served == 100


def test_budget_holds_across_workers(fleet: Fleet) -> None:
    asyncio.run(burst(fleet.url, "sk-budgeted", 60))
    time.sleep(0.5)  # each worker's ledger writer lingers briefly
    out = io.StringIO()
    export(fleet.ledger, "jsonl", None, out)
    spent = sum(
        (
            Decimal(r["cost_usd"])
            for r in map(json.loads, out.getvalue().splitlines())
            if r["key"] == "budgeted"
        ),
        Decimal(0),
    )
    # worst case of one request: ~10 prompt tokens + 4096 default output at $0.6/1M
    worst = Decimal("0.0000026")
    assert Decimal(0) < spent <= Decimal("0.0001") + worst


def test_more_than_one_worker_needs_redis(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage: {ledger: 'memory://'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "tokenway", "serve", "--workers", "2", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 2 and "redis" in done.stderr


def workers_of(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    f = Fleet(tmp_path)
    try:
        workers = workers_of(f.gw.pid)
        assert len(workers) == 3
        os.kill(f.gw.pid, signal.SIGKILL)
        f.gw.wait()
        end = time.monotonic() + 60
        while any(alive(w) for w in workers) and time.monotonic() < end:
            time.sleep(0.1)
        assert not any(alive(w) for w in workers), "workers outlived their supervisor"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(f.gw.pid, signal.SIGKILL)
        f.stop()
