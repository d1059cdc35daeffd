"""Keys managed at runtime through the admin API: created, used with the SDKs, limited,
rotated, revoked and expired without a restart, seen by a second gateway on the same store
within a second, and every change in the audit log; on a SQLite ledger and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx2 as httpx
import openai
import pytest

from .stack import Stack

ADMIN = {"authorization": "Bearer sk-test-admin"}
MSG = [{"role": "user", "content": "hi"}]


def doc(ledger: str) -> dict[str, Any]:
    return {
        "admin_key": "sk-test-admin",
        "storage": {"ledger": ledger},
        "sim": [{"name": "s", "kind": "openai", "scenario": {"ttft_ms": 1, "output_tokens": 4}}],
        "providers": [{"name": "p", "kind": "openai", "base_url": "sim://s"}],
        "models": [
            {"name": "m", "targets": [{"provider": "p", "model": "gpt-4o-mini"}]},
            {"name": "other", "targets": [{"provider": "p", "model": "gpt-4o-mini"}]},
        ],
        "keys": [{"name": "cfg", "key": "sk-test-config-key"}],
    }


async def _drop_schema(base: str, schema: str) -> None:
    conn = await asyncpg.connect(base, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Stack]]:
    """Two gateways on one store: a SQLite file, or a schema on the shared PostgreSQL."""
    tmp = tmp_path_factory.mktemp("keys")
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp / 'ledger.db'}"] * 2
    else:
        base: str = request.getfixturevalue("pg_base")
        schema = f"t_{uuid.uuid4().hex}"
        # one schema, a spool directory each (as two machines would have)
        urls = [f"{base}?schema={schema}&spool={tmp / f'spool-{i}'}" for i in range(2)]
    a, b = Stack(doc(urls[0])).start(), Stack(doc(urls[1])).start()
    yield a, b
    a.stop()
    b.stop()
    if request.param == "postgres":
        asyncio.run(_drop_schema(base, schema))


def client(stack: Stack, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=secret, max_retries=0)


def test_create_use_limit_rotate_revoke(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    r = httpx.post(
        a.url + "/admin/keys",
        headers=ADMIN,
        json={"name": "svc", "models": ["m"], "rpm": 2},
    )
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert secret.startswith("sk-tw-") and r.json()["key"]["prefix"] == secret[:10]
    listed = httpx.get(a.url + "/admin/keys", headers=ADMIN).text
    assert secret not in listed and "svc" in listed and "cfg" in listed
    assert client(a, secret).chat.completions.create(model="m", messages=MSG).choices
    with pytest.raises(openai.PermissionDeniedError):
        client(a, secret).chat.completions.create(model="other", messages=MSG)
    # the other replica learns the key within a second
    deadline = time.time() + 3
    while True:
        try:
            client(b, secret).chat.completions.create(model="m", messages=MSG)
            break
        except openai.AuthenticationError:
            assert time.time() < deadline, "replica b never saw the new key"
            time.sleep(0.2)
    client(b, secret).chat.completions.create(model="m", messages=MSG)
    with pytest.raises(openai.RateLimitError):  # the key's rpm: 2 holds on replica b too
        client(b, secret).chat.completions.create(model="m", messages=MSG)

    new = httpx.post(a.url + "/admin/keys/svc/rotate", headers=ADMIN).json()["secret"]
    with pytest.raises(openai.AuthenticationError):
        client(a, secret).chat.completions.create(model="m", messages=MSG)
    patched = httpx.patch(a.url + "/admin/keys/svc", headers=ADMIN, json={"models": ["other"]})
    assert patched.status_code == 200
    assert client(a, new).chat.completions.create(model="other", messages=MSG).choices
    assert httpx.delete(a.url + "/admin/keys/svc", headers=ADMIN).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client(a, new).chat.completions.create(model="other", messages=MSG)

    audit = httpx.get(a.url + "/admin/audit", headers=ADMIN).json()["data"]
    assert [e["action"] for e in audit if e["key"] == "svc"] == [
        "create",
        "rotate",
        "update",
        "revoke",
    ]
    assert secret not in str(audit) and new not in str(audit)


def test_expiry_bad_input_and_config_keys(pair: tuple[Stack, Stack]) -> None:
    a, _ = pair
    r = httpx.post(
        a.url + "/admin/keys", headers=ADMIN, json={"name": "brief", "expires_in_s": 0.5}
    )
    secret = r.json()["secret"]
    assert client(a, secret).chat.completions.create(model="m", messages=MSG).choices
    time.sleep(0.6)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        client(a, secret).chat.completions.create(model="m", messages=MSG)
    bad = httpx.post(a.url + "/admin/keys", headers=ADMIN, json={"name": "x", "rpm": "many"})
    assert bad.status_code == 400 and "rpm" in bad.text
    unknown = httpx.post(a.url + "/admin/keys", headers=ADMIN, json={"name": "y", "models": ["z"]})
    assert unknown.status_code == 400
    dup = httpx.post(a.url + "/admin/keys", headers=ADMIN, json={"name": "brief"})
    assert dup.status_code == 400 and "exists" in dup.text
    assert httpx.delete(a.url + "/admin/keys/cfg", headers=ADMIN).status_code == 403
    assert httpx.delete(a.url + "/admin/keys/nobody", headers=ADMIN).status_code == 404
    user = {"authorization": "Bearer sk-test-config-key"}
    assert httpx.post(a.url + "/admin/keys", headers=user, json={"name": "z"}).status_code == 403


def test_cli_keys_reach_a_running_gateway(pair: tuple[Stack, Stack], tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    a, _ = pair
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(doc(a.config.raw.storage.ledger)))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tokenway", "keys", *args, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = cli("create", "batch-job", "--models", "m", "--expires-in", "30d")
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["secret"]
    assert "shown once" in made.stderr
    time.sleep(1.2)  # the running gateway polls the store every second
    assert client(a, secret).chat.completions.create(model="m", messages=MSG).choices
    listed = cli("list")
    assert "batch-job" in listed.stdout and secret not in listed.stdout
    assert cli("revoke", "batch-job").returncode == 0
    assert cli("revoke", "nobody").returncode == 2
    time.sleep(1.2)
    with pytest.raises(openai.AuthenticationError):
        client(a, secret).chat.completions.create(model="m", messages=MSG)
    audit = httpx.get(a.url + "/admin/audit", headers=ADMIN).json()["data"]
    assert {"create", "revoke"} <= {e["action"] for e in audit if e["key"] == "batch-job"}
    assert all(e["actor"].startswith("cli:") for e in audit if e["key"] == "batch-job")
