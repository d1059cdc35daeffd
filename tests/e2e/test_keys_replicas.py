"""Runtime keys on a PostgreSQL ledger shared by separate gateway processes: a key made through
one replica's admin API works on the other within about a second, a revoke on one is refused
by the other, and both are in the audit log. A store that goes down is logged once, the keys
already loaded keep working, admin writes get a 503 in OpenAI's shape, and changes made after
the server returns are picked up without a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.private_pg import PrivatePostgres, free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "sk-test-admin"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CONFIG_KEY = "sk-test-config-key"
MSG = [{"role": "user", "content": "hi"}]


def doc(ledger: str) -> dict[str, Any]:
    return {
        "admin_key": ADMIN_KEY,
        "storage": {"ledger": ledger},
        "server": {"log_level": "warning"},
        "sim": [{"name": "s", "kind": "openai", "scenario": {"ttft_ms": 1, "output_tokens": 4}}],
        "providers": [{"name": "p", "kind": "openai", "base_url": "sim://s"}],
        "models": [{"name": "m", "targets": [{"provider": "p", "model": "gpt-4o-mini"}]}],
        "keys": [{"name": "cfg", "key": CONFIG_KEY}],
    }


class Gateway:
    """`tokenway serve` in a process of its own, logging to a file."""

    def __init__(self, tmp: Path, name: str, ledger: str) -> None:
        self.config = tmp / f"{name}.yaml"
        self.config.write_text(json.dumps(doc(ledger)))
        self.log = tmp / f"{name}.log"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        serve = ["serve", "--config", str(self.config), "--port", str(port)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tokenway", *serve],
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{name} exited: {self.log.read_text()[-2000:]}"
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"{name} never became ready: {self.log.read_text()[-2000:]}")

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    def chat(self, key: str) -> None:
        with self.client(key) as c:
            assert c.chat.completions.create(model="m", messages=MSG).choices

    def logged(self, msg: str) -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]
        return [line for line in lines if line.get("msg") == msg]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def eventually(check: Callable[[], bool], what: str, within_s: float) -> None:
    """Poll `check` until it holds; fail after `within_s` (a bound, not a measurement)."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def accepted(gw: Gateway, key: str) -> bool:
    try:
        gw.chat(key)
    except openai.AuthenticationError:
        return False
    return True


def test_keys_made_and_revoked_on_one_replica_hold_on_the_other(
    pg_url: str, tmp_path: Path
) -> None:
    shared, _, _ = pg_url.partition("&spool=")  # one schema; each machine its own spool
    a = Gateway(tmp_path, "a", f"{shared}&spool={tmp_path / 'spool-a'}")
    b = Gateway(tmp_path, "b", f"{shared}&spool={tmp_path / 'spool-b'}")
    try:
        made = httpx.post(a.url + "/admin/keys", headers=ADMIN, json={"name": "svc"}, timeout=30)
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        a.chat(secret)  # the replica that made it reloads at once
        eventually(lambda: accepted(b, secret), "replica b never accepted the key", 5.0)

        revoked = httpx.delete(b.url + "/admin/keys/svc", headers=ADMIN, timeout=30)
        assert revoked.status_code == 200, revoked.text
        assert not accepted(b, secret)
        eventually(lambda: not accepted(a, secret), "replica a still accepts the key", 5.0)

        for gw in (a, b):
            audit = httpx.get(gw.url + "/admin/audit", headers=ADMIN, timeout=30).json()["data"]
            assert [(e["action"], e["key"], e["actor"]) for e in audit] == [
                ("create", "svc", "admin-api"),
                ("revoke", "svc", "admin-api"),
            ]
            assert secret not in json.dumps(audit)
        listed = httpx.get(a.url + "/admin/keys", headers=ADMIN, timeout=30).json()["data"]
        assert [(k["name"], k.get("revoked_at") is not None) for k in listed] == [
            ("cfg", False),
            ("svc", True),
        ]
    finally:
        codes = [a.stop(), b.stop()]
    assert codes == [0, 0]
    for gw in (a, b):
        assert secret not in gw.log.read_text()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def cli(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenway", "keys", *args, "--config", str(gw.config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


DOWN = "key store unavailable: serving with the keys already loaded"
BACK = "key store reachable again: keys reloaded"


def test_a_key_store_outage_keeps_keys_and_refuses_admin_writes(
    private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    gw = Gateway(tmp_path, "gw", f"{private_pg.url}?schema=tw&spool={tmp_path / 'spool'}")
    secrets = []
    try:
        made = httpx.post(gw.url + "/admin/keys", headers=ADMIN, json={"name": "early"})
        assert made.status_code == 201, made.text
        secrets.append(made.json()["secret"])

        private_pg.stop()
        eventually(lambda: bool(gw.logged(DOWN)), "the outage was never logged", 30.0)
        gw.chat(secrets[0])  # the keys loaded before the outage keep working
        gw.chat(CONFIG_KEY)

        r = httpx.post(gw.url + "/admin/keys", headers=ADMIN, json={"name": "late"}, timeout=60)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("api_error", "store_unavailable")
        assert "unavailable" in error["message"]
        with (
            openai.OpenAI(base_url=gw.url, api_key=ADMIN_KEY, max_retries=0) as sdk,
            pytest.raises(openai.InternalServerError) as raised,
        ):
            sdk.post("/admin/keys/early/rotate", cast_to=object)
        assert raised.value.status_code == 503 and raised.value.code == "store_unavailable"
        for path in ("/admin/keys", "/admin/audit"):
            assert httpx.get(gw.url + path, headers=ADMIN, timeout=60).status_code == 503
        down = cli(gw, "list")
        assert down.returncode == 1 and "key store is unavailable" in down.stderr
        assert "Traceback" not in down.stderr

        time.sleep(2.5)  # more polls fail meanwhile: none of them may log again
        private_pg.start()
        # a change made elsewhere once the server is back: the gateway picks it up by itself
        made_late = cli(gw, "create", "late")
        assert made_late.returncode == 0, made_late.stderr
        secrets.append(json.loads(made_late.stdout)["secret"])
        eventually(lambda: accepted(gw, secrets[1]), "the new key was never picked up", 15.0)
        gw.chat(secrets[0])
        (outage,) = gw.logged(DOWN)
        assert (outage["level"], outage["error"], outage["stored_keys"]) == (
            "warning",
            "StoreUnavailable",
            1,
        )
        assert len(gw.logged(BACK)) == 1
        audit = httpx.get(gw.url + "/admin/audit", headers=ADMIN, timeout=60).json()["data"]
        assert [(e["action"], e["key"]) for e in audit] == [("create", "early"), ("create", "late")]
    finally:
        code = gw.stop()
    assert code == 0
    text = gw.log.read_text()
    assert all(s not in text for s in secrets) and ADMIN_KEY not in text
