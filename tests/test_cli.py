"""The `tokenway` command as a newcomer and an operator use it: real processes, real sockets."""

from __future__ import annotations

import csv
import getpass
import io
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.net import free_port
from tokenway.config.demo import DEMO_KEY


def tokenway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenway", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


class Served:
    def __init__(self, proc: subprocess.Popen[str], port: int, banner: list[str]) -> None:
        self.proc, self.port, self.banner = proc, port, banner
        self.url = f"http://127.0.0.1:{port}"


def serve(cwd: Path, *extra: str) -> Served:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenway", "serve", "--port", str(port), *extra],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    banner: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner.append(line.rstrip())
        if line.startswith("tokenway listening"):
            # the demo prints a few more lines; read them without blocking on the pipe
            threading.Thread(target=lambda: banner.extend(proc.stdout or []), daemon=True).start()
            time.sleep(0.2)
            return Served(proc, port, banner)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise AssertionError(f"tokenway serve did not start: {banner}")


def stop(s: Served) -> None:
    if s.proc.poll() is None:
        s.proc.kill()
    s.proc.wait()
    if s.proc.stdout is not None:
        s.proc.stdout.close()


@pytest.fixture()
def demo(tmp_path: Path) -> Iterator[Served]:
    s = serve(tmp_path)
    yield s
    stop(s)


def test_demo_serves_out_of_the_box_and_exports_usage(demo: Served, tmp_path: Path) -> None:
    assert any(DEMO_KEY in line for line in demo.banner)
    with openai.OpenAI(base_url=demo.url + "/v1", api_key=DEMO_KEY, max_retries=0) as client:
        for model in ("demo-chat", "claude-sonnet-4-6", "gemini-2.5-flash"):
            r = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}]
            )
            assert r.choices[0].message.content
    demo.proc.send_signal(signal.SIGTERM)
    assert demo.proc.wait(timeout=20) == 0
    assert (tmp_path / "tokenway-data" / "ledger.db").exists()
    out = tokenway("usage", "export", "--format", "csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["model"] for r in rows] == ["demo-chat", "claude-sonnet-4-6", "gemini-2.5-flash"]
    assert all(r["key"] == "demo" and r["status"] == "200" for r in rows)
    assert all(int(r["input_tokens"]) > 0 and int(r["output_tokens"]) > 0 for r in rows)
    assert DEMO_KEY not in out.stdout


def test_graceful_shutdown_finishes_streams_in_flight(tmp_path: Path) -> None:
    cfg = tmp_path / "slow.yaml"
    cfg.write_text(
        """
sim:
  - {name: slow, kind: openai, scenario: {ttft_ms: 50, tokens_per_s: 40, output_tokens: 40}}
providers:
  - {name: slow, kind: openai, base_url: "sim://slow"}
models:
  - {name: slow, targets: [{provider: slow, model: gpt-4o-mini}]}
keys:
  - {name: app, key: sk-app}
storage: {ledger: "sqlite:///data/ledger.db"}
"""
    )
    s = serve(tmp_path, "--config", str(cfg))
    try:
        with openai.OpenAI(base_url=s.url + "/v1", api_key="sk-app", max_retries=0) as client:
            stream = client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "go"}], stream=True
            )
            first = next(iter(stream))
            assert first.choices
            s.proc.send_signal(signal.SIGTERM)
            rest = list(stream)
        assert rest[-1].choices[0].finish_reason == "length" or any(
            c.choices and c.choices[0].finish_reason for c in rest
        )
        assert s.proc.wait(timeout=20) == 0
    finally:
        stop(s)
    out = tokenway("usage", "export", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert '"status":200' in out.stdout.replace(" ", "")


def test_config_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  - {name: a, kind: openai, base_url: 'https://x/v1', colour: red}\n"
    )
    out = tokenway("config", "check", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert "providers[0].colour: unknown key" in out.stderr
    assert "Traceback" not in out.stderr
    out = tokenway("serve", "--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert out.returncode == 2 and "cannot read" in out.stderr


def test_workers_need_shared_state(tmp_path: Path) -> None:
    out = tokenway("serve", "--workers", "2", cwd=tmp_path)
    assert out.returncode == 2 and "redis" in out.stderr


def test_gateway_on_a_postgres_ledger(tmp_path: Path) -> None:
    # the shared PostgreSQL server (.ci/run starts it), in a schema of this test's own
    schema = f"t_{uuid.uuid4().hex}"
    base = f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
    cfg = tmp_path / "pg.yaml"
    cfg.write_text(
        f"""
sim: [{{name: s, kind: openai}}]
providers: [{{name: s, kind: openai, base_url: "sim://s"}}]
models: [{{name: m, targets: [{{provider: s, model: gpt-4o-mini}}]}}]
keys: [{{name: app, key: sk-app}}]
storage: {{ledger: "{base}?schema={schema}&spool={tmp_path / "spool"}"}}
"""
    )
    try:
        s = serve(tmp_path, "--config", str(cfg))
        try:
            with openai.OpenAI(base_url=s.url + "/v1", api_key="sk-app", max_retries=0) as client:
                for _ in range(2):
                    client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "hi"}]
                    )
            s.proc.send_signal(signal.SIGTERM)
            assert s.proc.wait(timeout=20) == 0
        finally:
            stop(s)
        out = tokenway("usage", "export", "--config", str(cfg), "--format", "csv", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        assert [(r["key"], r["model"], r["status"]) for r in rows] == [("app", "m", "200")] * 2
    finally:
        drop = f"""import asyncio, asyncpg
async def main():
    conn = await asyncpg.connect({base!r})
    await conn.execute('DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()
asyncio.run(main())"""
        subprocess.run([sys.executable, "-c", drop], check=True, timeout=30)
