"""`tokenway serve` killed with SIGKILL in the middle of a batch, then started again: the batch
resumes and completes with exactly one result per line, and the ledger has one request row per
line (mode batch) that also carries the upstream attempts the killed process had in flight.
Against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from tokenway.accounting.ledger import read_attempts, read_requests
from tokenway.batch.ids import line_request_id
from tokenway.batch.store import JobStore
from tokenway.store import open_database

from .conftest import chat_line, records, upload, wait_done

ROOT = Path(__file__).resolve().parents[2]
LINES = 40


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"the process serving {url} exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


class Deployment:
    """A simulated provider and a `tokenway serve` in processes of their own."""

    def __init__(self, tmp: Path, ledger: str) -> None:
        self.tmp = tmp
        self.ledger = ledger
        sim_port, self.port = _port(), _port()
        sims = {
            "sim": [
                {
                    "name": "up",
                    "kind": "openai",
                    "port": sim_port,
                    # slow enough that lines are in flight whenever the gateway is killed
                    "scenario": {"ttft_ms": 400, "tokens_per_s": 5000, "output_tokens": 8},
                }
            ]
        }
        gateway = {
            "listen": f"127.0.0.1:{self.port}",
            "storage": {"ledger": ledger},
            "server": {"log_level": "warning"},
            "providers": [
                {"name": "up", "kind": "openai", "base_url": f"http://127.0.0.1:{sim_port}/v1"}
            ],
            "models": [{"name": "m", "targets": [{"provider": "up", "model": "gpt-4o-mini"}]}],
            "prices": [
                {
                    "provider": "up",
                    "model": "gpt-4o-mini",
                    "input": 0.15,
                    "output": 0.6,
                    "multipliers": {"batch": 0.5},
                }
            ],
            "keys": [{"name": "app", "key": "sk-app"}],
            "batch": {"concurrency": 4, "lease_s": 2},
        }
        (tmp / "sims.yaml").write_text(json.dumps(sims))
        (tmp / "gw.yaml").write_text(json.dumps(gateway))
        self.env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "tokenway", "sim", "--config", str(tmp / "sims.yaml")],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_http(f"http://127.0.0.1:{sim_port}/v1/models", self.sim)
        self.url = f"http://127.0.0.1:{self.port}"
        self.gw: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start_gateway(self) -> None:
        self.starts += 1
        log = (self.tmp / f"gateway-{self.starts}.log").open("wb")
        self.gw = subprocess.Popen(
            [sys.executable, "-m", "tokenway", "serve", "--config", str(self.tmp / "gw.yaml")],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        _wait_http(self.url + "/readyz", self.gw)

    def kill_gateway(self) -> None:
        assert self.gw is not None
        self.gw.send_signal(signal.SIGKILL)
        assert self.gw.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.gw is not None and self.gw.poll() is None:
            self.gw.send_signal(signal.SIGTERM)
            self.gw.wait(60)
        self.sim.kill()
        self.sim.wait(30)


@pytest.fixture
def deployment(tmp_path: Path, ledger_url: str) -> Iterator[Deployment]:
    d = Deployment(tmp_path, ledger_url)
    yield d
    d.stop()


def _wait_progress(client: openai.OpenAI, batch_id: str, at_least: int) -> None:
    end = time.monotonic() + 120
    while True:
        counts = client.batches.retrieve(batch_id).request_counts
        if counts is not None and counts.completed >= at_least:
            return
        assert time.monotonic() < end, "the batch made no progress"
        time.sleep(0.05)


def test_a_batch_survives_sigkill_with_one_result_and_one_ledger_row_per_line(
    deployment: Deployment,
) -> None:
    deployment.start_gateway()
    client = openai.OpenAI(base_url=deployment.url + "/v1", api_key="sk-app", max_retries=3)
    ids = [f"line-{i:02d}" for i in range(LINES)]
    try:
        lines = [chat_line(c, f"tell me about {c}", model="m") for c in ids]
        batch = client.batches.create(
            input_file_id=upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        _wait_progress(client, batch.id, 8)
        deployment.kill_gateway()

        store = JobStore(open_database(deployment.ledger))
        try:
            row = store.get_batch("app", batch.id)
        finally:
            store.close()
        assert row is not None and row["status"] == "in_progress"
        assert row["completed"] < LINES

        deployment.start_gateway()
        done = wait_done(client, batch.id, timeout=180)
        assert done.status == "completed"
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (LINES, LINES)
        assert done.error_file_id is None
        out = records(client, done.output_file_id)
    finally:
        client.close()
    assert sorted(r["custom_id"] for r in out) == ids  # each line exactly once
    assert all(r["response"]["status_code"] == 200 for r in out)
    expected = {line_request_id(batch.id, c) for c in ids}
    assert {r["response"]["request_id"] for r in out} == expected

    rows = list(read_requests(deployment.ledger))
    assert len(rows) == LINES  # one request row per line, even for the lines run twice
    assert {r["request_id"] for r in rows} == expected
    assert {(r["mode"], r["status"]) for r in rows} == {("batch", 200)}
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in read_attempts(deployment.ledger):
        attempts.setdefault(a["request_id"], []).append(a)
    lost = 0
    for r in rows:
        tried = attempts[r["request_id"]]
        assert [a["seq"] for a in tried] == list(range(len(tried)))
        served = [a for a in tried if a["flag"] == "OK"]
        assert len(served) == 1
        for a in tried:
            if a["flag"] == "LOST":
                lost += 1
                assert a["usage_source"] == "estimated" and a["input_tokens"] > 0
                assert a["cost_usd"] > 0
        # every attempt is costed; the client is charged for the answer it got, once
        assert r["cost_usd"] == sum((a["cost_usd"] for a in tried), Decimal(0))
        assert r["revenue_usd"] == served[0]["cost_usd"]
    # the kill landed while lines were in flight: they were sent again, and both sends are
    # on the ledger
    assert lost >= 1


def test_sigterm_hands_running_lines_back_and_a_restart_finishes(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        deployment.start_gateway()
        client = openai.OpenAI(base_url=deployment.url + "/v1", api_key="sk-app", max_retries=3)
        try:
            ids = [f"t{i:02d}" for i in range(LINES)]
            batch = client.batches.create(
                input_file_id=upload(client, [chat_line(c, "hi", model="m") for c in ids]),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            _wait_progress(client, batch.id, 4)
            assert deployment.gw is not None
            deployment.gw.send_signal(signal.SIGTERM)
            assert deployment.gw.wait(60) == 0
            store = JobStore(open_database(deployment.ledger))
            try:
                running = store.db.fetch(
                    "SELECT line FROM batch_lines WHERE batch_id = :b AND state = 'running'",
                    {"b": batch.id},
                )
                row = store.get_batch("app", batch.id)
            finally:
                store.close()
            assert running == []  # nothing left leased to the process that stopped
            assert row is not None and row["status"] == "in_progress"
            deployment.start_gateway()
            done = wait_done(client, batch.id, timeout=180)
            out = records(client, done.output_file_id)
        finally:
            client.close()
    finally:
        deployment.stop()
    assert done.status == "completed"
    assert sorted(r["custom_id"] for r in out) == ids
    rows = list(read_requests(deployment.ledger))
    assert len(rows) == LINES and {r["mode"] for r in rows} == {"batch"}
