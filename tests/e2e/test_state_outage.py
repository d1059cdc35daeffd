"""Redis killed under load, through the real gateway: fail-open keeps requests flowing on
local limits, fail-closed answers 429 at once, nobody waits past the deadline, and recovery is
automatic. The Redis here is a private server on a temporary port, never the shared one."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from tests.net import free_port

from .stack import Stack

KEY = "sk-test-outage"
MSG = [{"role": "user", "content": "hello"}]


class PrivateRedis:
    def __init__(self, tmp: Path) -> None:
        self.exe = shutil.which("redis-server")
        assert self.exe, "redis-server is needed"
        self.port, self.tmp = free_port(), tmp
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.exe
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir"]
        self.proc = subprocess.Popen([self.exe, *args, str(self.tmp)], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise AssertionError("private redis did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def doc(ledger: Path, url: str, policy: str) -> dict[str, Any]:
    return {
        "storage": {
            "ledger": f"sqlite:///{ledger}",
            "state": url,
            "state_failure": policy,
            "state_timeout_ms": 200,
            "replicas": 2,
        },
        "sim": [{"name": "s", "kind": "openai", "scenario": {"ttft_ms": 2, "output_tokens": 4}}],
        "providers": [{"name": "p", "kind": "openai", "base_url": "sim://s"}],
        "models": [{"name": "m", "targets": [{"provider": "p", "model": "gpt-4o-mini"}]}],
        "keys": [{"name": "k", "key": KEY, "rpm": 10_000}],
    }


@pytest.fixture
def private(tmp_path: Path) -> Iterator[PrivateRedis]:
    r = PrivateRedis(tmp_path)
    r.start()
    yield r
    r.kill()


async def load(stack: Stack, n: int, rate: float, kill_after: int, r: PrivateRedis) -> list[Any]:
    client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
    out: list[Any] = []

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            await client.chat.completions.create(
                model="m", messages=MSG, extra_headers={"x-tokenway-timeout-ms": "2000"}
            )
            out.append((time.perf_counter() - t0, None))
        except openai.APIStatusError as exc:
            out.append((time.perf_counter() - t0, exc))

    tasks = []
    for i in range(n):
        if i == kill_after:
            r.kill()
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    await client.close()
    return out


def test_fail_open_keeps_serving_on_local_limits(private: PrivateRedis, tmp_path: Path) -> None:
    stack = Stack(doc(tmp_path / "l.db", private.url, "open")).start()
    try:
        out = asyncio.run(load(stack, 120, 60.0, 30, private))
        assert [e for _, e in out if e is not None] == []
        assert max(s for s, _ in out) < 2.0  # nobody waited past the deadline
        assert stack.rt.state.failures >= 1  # type: ignore[attr-defined]
    finally:
        stack.stop()


def test_fail_closed_refuses_fast_and_recovers(private: PrivateRedis, tmp_path: Path) -> None:
    stack = Stack(doc(tmp_path / "l.db", private.url, "closed")).start()
    try:
        out = asyncio.run(load(stack, 60, 60.0, 20, private))
        served = [s for s, e in out[:20] if e is None]
        refused = [(s, e) for s, e in out[25:] if e is not None]
        assert len(served) == 20
        assert refused and len(refused) == len(out[25:])
        assert all(isinstance(e, openai.RateLimitError) for _, e in refused)
        assert all(s < 1.0 for s, _ in refused)  # refused at once, not at the deadline
        private.start()  # same port: the gateway finds it again by itself
        time.sleep(1.2)
        client = openai.OpenAI(base_url=stack.url + "/v1", api_key=KEY, max_retries=0)
        assert client.chat.completions.create(model="m", messages=MSG).choices
        client.close()
    finally:
        stack.stop()
