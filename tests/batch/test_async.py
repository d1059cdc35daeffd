"""Async tasks against a real gateway and simulated providers, driven with the official `openai`
SDK's raw calls: submit (202), poll to the end, the result and a `mode=async` ledger row priced
with the async multiplier, key scoping, a signed webhook received by a server of the test's
own, 4xx errors in OpenAI's shape, expiry at the deadline, and cancelling."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2 as httpx
import msgspec
import openai
import pytest
from aiohttp import web

from tests.e2e.stack import Stack
from tokenway.accounting.ledger import read_attempts, read_requests
from tokenway.batch.ids import task_request_id
from tokenway.batch.store import JobStore
from tokenway.batch.webhook import verify
from tokenway.config.load import ConfigError, parse_config
from tokenway.domain.types import Principal
from tokenway.store import open_database

from .conftest import KEY, TERMINAL, stack_doc
from .test_durability import Deployment

SECRET = "whsec-test-0123456789abcdef"
TIGHT_KEY = "sk-batch-tight"
MTOK = Decimal(1_000_000)
# the config's gpt-4o-mini price (0.15 in, 0.60 out per 1M) with its async multiplier of 0.25
ASYNC_IN, ASYNC_OUT = Decimal("0.0375"), Decimal("0.15")
CHAT = {"model": "m-chat", "messages": [{"role": "user", "content": "tell me a story"}]}


def _doc(ledger: Path) -> dict[str, Any]:
    doc = stack_doc(ledger)
    for price in doc["prices"]:
        price["multipliers"]["async"] = 0.25
    # a model and a key of their own for the tests that keep a task waiting: the key's one
    # request a minute is spent, so the runner holds back (pauses) that model alone
    doc["models"].append(
        {"name": "m-tight", "targets": [{"provider": "openai", "model": "gpt-4o-mini"}]}
    )
    doc["keys"].append({"name": "tight", "key": TIGHT_KEY, "rpm": 1})
    doc["async"] = {
        "webhook_secret": SECRET,
        "webhook_backoff_s": 0.2,
        "webhook_attempts": 3,
        "webhook_timeout_s": 2,
        "webhook_private": True,  # the test's receiver listens on loopback
    }
    return doc


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(_doc(tmp_path_factory.mktemp("async") / "ledger.db")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tight(stack: Stack) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TIGHT_KEY, max_retries=0)
    yield c
    c.close()


def submit(
    client: openai.OpenAI,
    body: dict[str, Any],
    path: str = "/async/chat/completions",
    **headers: str,
) -> httpx.Response:
    return client.post(path, body=body, cast_to=httpx.Response, options={"headers": headers})


def get_task(client: openai.OpenAI, task_id: str) -> dict[str, Any]:
    task: dict[str, Any] = client.get(f"/async/tasks/{task_id}", cast_to=httpx.Response).json()
    return task


def wait_task(client: openai.OpenAI, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        task = get_task(client, task_id)
        if task["status"] in TERMINAL:
            return task
        assert time.monotonic() < end, f"task still {task['status']} after {timeout}s"
        time.sleep(0.05)


def ledger_row(stack: Stack, request_id: str) -> dict[str, Any] | None:
    stack.flush()
    found = [
        r for r in read_requests(stack.config.raw.storage.ledger) if r["request_id"] == request_id
    ]
    assert len(found) <= 1
    return found[0] if found else None


def spend_the_minute(tight: openai.OpenAI) -> None:
    """Use up the tight key's one request a minute (if an earlier test has not already)."""
    with contextlib.suppress(openai.RateLimitError):
        tight.chat.completions.create(model="m-tight", messages=[{"role": "user", "content": "hi"}])


# ---- the flow -----------------------------------------------------------------------------


def test_a_task_is_accepted_then_completes_with_the_answer_and_an_async_ledger_row(
    stack: Stack, client: openai.OpenAI
) -> None:
    before = time.time()
    resp = submit(client, CHAT)
    assert resp.status_code == 202
    task = resp.json()
    assert task["id"].startswith("task_") and task["object"] == "async.task"
    assert resp.headers["location"] == f"/v1/async/tasks/{task['id']}"
    assert task["status"] in ("queued", "in_progress")
    assert task["endpoint"] == "/v1/chat/completions" and task["model"] == "m-chat"
    assert task["result"] is None and task["usage"] is None and task["webhook"] is None
    assert int(before) <= task["created_at"] <= time.time()
    # the default deadline of the config: an hour
    assert task["expires_at"] - task["created_at"] in (3600, 3601)

    done = wait_task(client, task["id"])
    assert done["status"] == "completed" and done["error"] is None
    assert done["created_at"] <= done["started_at"] <= done["completed_at"]
    assert done["failed_at"] is None and done["expired_at"] is None
    result = done["result"]
    assert result["status_code"] == 200
    body = result["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    usage = done["usage"]
    assert usage["input_tokens"] == body["usage"]["prompt_tokens"] > 0
    assert usage["output_tokens"] == body["usage"]["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

    row = ledger_row(stack, done["request_id"])
    assert row is not None
    assert (row["mode"], row["status"], row["key"], row["model"]) == ("async", 200, "app", "m-chat")
    assert (row["input_tokens"], row["output_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    expected = (row["input_tokens"] * ASYNC_IN + row["output_tokens"] * ASYNC_OUT) / MTOK
    assert row["cost_usd"] == expected > 0
    assert row["revenue_usd"] == row["cost_usd"]
    (attempt,) = read_attempts(stack.config.raw.storage.ledger, done["request_id"])
    assert attempt["flag"] == "OK"
    # the same task read again is the same, and the ledger still has one row for it
    assert get_task(client, task["id"]) == done
    assert ledger_row(stack, done["request_id"]) is not None


def test_an_embeddings_task_completes(stack: Stack, client: openai.OpenAI) -> None:
    resp = submit(client, {"model": "e-embed", "input": ["one", "two"]}, "/async/embeddings")
    assert resp.status_code == 202
    done = wait_task(client, resp.json()["id"])
    assert done["status"] == "completed" and done["endpoint"] == "/v1/embeddings"
    assert done["result"]["status_code"] == 200
    assert len(done["result"]["body"]["data"]) == 2
    row = ledger_row(stack, done["request_id"])
    assert row is not None and row["mode"] == "async" and row["input_tokens"] > 0


def test_a_request_that_fails_upstream_ends_failed_with_its_error(
    stack: Stack, client: openai.OpenAI
) -> None:
    done = wait_task(client, submit(client, {**CHAT, "model": "m-dead"}).json()["id"])
    assert done["status"] == "failed" and done["failed_at"] is not None
    assert done["result"]["status_code"] == 503
    assert done["result"]["body"]["error"]["type"]
    assert done["usage"] is None
    row = ledger_row(stack, done["request_id"])
    assert row is not None and row["mode"] == "async" and row["status"] == 503


def test_a_task_runs_with_the_routing_headers_it_was_sent_with(
    stack: Stack, client: openai.OpenAI
) -> None:
    tagged = submit(
        client, CHAT, **{"x-tokenway-tags": "team=search,tenant=acme", "x-tokenway-task": "qa"}
    )
    fenced = submit(client, CHAT, **{"x-tokenway-regions": "mars"})
    done = wait_task(client, tagged.json()["id"])
    row = ledger_row(stack, done["request_id"])
    assert row is not None and row["mode"] == "async"
    assert (row["tags"], row["task"]) == ({"team": "search", "tenant": "acme"}, "qa")
    # no target is on mars: the task fails as the endpoint itself would have answered
    refused = wait_task(client, fenced.json()["id"])
    assert refused["status"] == "failed" and refused["result"]["status_code"] == 403
    assert "allowed regions (mars)" in refused["result"]["body"]["error"]["message"]


def test_another_key_gets_404_in_openais_shape(
    client: openai.OpenAI, other: openai.OpenAI, stack: Stack
) -> None:
    task_id = submit(client, CHAT).json()["id"]
    with pytest.raises(openai.NotFoundError):
        other.get(f"/async/tasks/{task_id}", cast_to=httpx.Response)
    with pytest.raises(openai.NotFoundError):
        other.post(f"/async/tasks/{task_id}/cancel", cast_to=httpx.Response)
    raw = httpx.get(
        f"{stack.url}/v1/async/tasks/{task_id}", headers={"authorization": "Bearer sk-batch-other"}
    )
    assert raw.status_code == 404
    assert raw.json() == {
        "error": {
            "message": f"No task found with id '{task_id}'.",
            "type": "not_found_error",
            "param": "task_id",
            "code": None,
        }
    }
    assert wait_task(client, task_id)["status"] == "completed"  # the owner still has it


# ---- webhooks -----------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on the stack's loop that fails its first `failures` deliveries."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.got.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        return web.Response(status=500 if len(self.got) <= self.failures else 204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook?token=abc"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def test_a_webhook_is_signed_retried_and_delivered(stack: Stack, client: openai.OpenAI) -> None:
    receiver = Receiver(failures=1)
    stack.run(receiver.start())
    try:
        resp = submit(client, CHAT, **{"x-tokenway-webhook": receiver.url})
        task = resp.json()
        assert task["webhook"] == {
            "url": receiver.url,
            "status": "waiting",
            "attempts": 0,
            "delivered_at": None,
            "last_error": None,
        }
        end = time.monotonic() + 30
        while len(receiver.got) < 2:
            assert time.monotonic() < end, f"{len(receiver.got)} deliveries"
            time.sleep(0.05)
        seen = get_task(client, task["id"])
        while seen["webhook"]["status"] != "delivered":
            assert time.monotonic() < end, seen["webhook"]
            time.sleep(0.05)
            seen = get_task(client, task["id"])
    finally:
        stack.run(receiver.stop())
    assert seen["webhook"]["attempts"] == 2 and seen["webhook"]["delivered_at"] is not None
    assert seen["webhook"]["last_error"] is None

    (first_headers, _), (headers, body) = receiver.got
    assert first_headers["x-tokenway-task-id"] == headers["x-tokenway-task-id"] == task["id"]
    assert headers["content-type"] == "application/json"
    delivered = json.loads(body)
    assert delivered["id"] == task["id"] and delivered["status"] == "completed"
    assert delivered["result"]["status_code"] == 200
    # the retry came after the failure, the backoff later
    assert (
        delivered["webhook"]["attempts"] == 1 and delivered["webhook"]["last_error"] == "HTTP 500"
    )

    # the signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    fields = dict(part.split("=", 1) for part in headers["x-tokenway-signature"].split(","))
    t = int(fields["t"])
    assert abs(time.time() - t) < 60
    mac = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], mac)
    wrong = hmac.new(b"not-the-secret-0123456", f"{t}.".encode() + body, hashlib.sha256)
    assert not hmac.compare_digest(fields["v1"], wrong.hexdigest())
    signature = headers["x-tokenway-signature"]
    assert verify(SECRET, signature, body)
    assert not verify("not-the-secret-0123456", signature, body)
    assert not verify(SECRET, signature, body + b" ")
    assert not verify(SECRET, signature, body, now=t + 3600)  # a replay, an hour later


def test_a_webhook_that_keeps_failing_is_given_up(stack: Stack, client: openai.OpenAI) -> None:
    receiver = Receiver(failures=99)
    stack.run(receiver.start())
    try:
        task = submit(client, CHAT, **{"x-tokenway-webhook": receiver.url}).json()
        end = time.monotonic() + 30
        seen = get_task(client, task["id"])
        while seen["webhook"]["status"] != "failed":
            assert time.monotonic() < end, seen["webhook"]
            time.sleep(0.05)
            seen = get_task(client, task["id"])
        time.sleep(1.0)  # and no more attempts come
    finally:
        stack.run(receiver.stop())
    assert len(receiver.got) == 3  # the config's webhook_attempts
    assert seen["status"] == "completed"
    assert seen["webhook"]["attempts"] == 3 and seen["webhook"]["last_error"] == "HTTP 500"
    assert seen["webhook"]["delivered_at"] is None


def test_the_async_config_is_checked_and_its_secret_never_shown() -> None:
    for bad, message in (
        ({"webhook_secret": "short"}, "async: webhook_secret: must be at least 16 characters"),
        ({"default_deadline_s": 0}, "async: default_deadline_s: must be from 1 to"),
        ({"max_deadline_s": 10, "default_deadline_s": 60}, "async: default_deadline_s"),
        ({"max_deadline_s": 10**9}, "async: max_deadline_s: must be from 1 to 2592000"),
        ({"webhook_attempts": 0}, "async: webhook_attempts: must be from 1 to 20"),
        ({"webhook_timeout_s": -1}, "async: webhook_timeout_s: must be a positive number"),
        ({"webhook_url": "x"}, "async.webhook_url: unknown key"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config({"async": bad}, env={})
        assert str(err.value).startswith(message), err.value
    cfg = parse_config({"async": {"webhook_secret": "${S}"}}, env={"S": SECRET})
    assert cfg.raw.async_.webhook_secret == SECRET
    assert SECRET not in repr(cfg.raw) and SECRET not in str(cfg.raw.async_)
    unset = parse_config({"async": {"webhook_secret": "${S:-}"}}, env={})
    assert unset.raw.async_.webhook_secret is None


def test_webhooks_without_a_secret_are_refused(tmp_path: Path) -> None:
    doc = stack_doc(tmp_path / "ledger.db")
    s = Stack(doc).start()
    try:
        resp = httpx.post(
            f"{s.url}/v1/async/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {KEY}", "x-tokenway-webhook": "https://x.test/h"},
        )
        assert resp.status_code == 400
        err = resp.json()["error"]
        assert err["param"] == "x-tokenway-webhook" and err["type"] == "invalid_request_error"
        assert "async.webhook_secret" in err["message"]
        # without a webhook, tasks still work there
        ok = httpx.post(
            f"{s.url}/v1/async/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert ok.status_code == 202
    finally:
        s.stop()


# ---- bad input ----------------------------------------------------------------------------


BODY = json.dumps(CHAT).encode()
BAD = [
    pytest.param("chat/completions", b'{"model": "m-chat", ', {}, 400, None, id="not-json"),
    pytest.param("chat/completions", b"[1, 2]", {}, 400, None, id="not-an-object"),
    pytest.param("chat/completions", b"", {}, 400, None, id="empty"),
    pytest.param("chat/completions", b'{"messages": []}', {}, 400, "model", id="no-model"),
    pytest.param("chat/completions", b'{"model": "m-chat"}', {}, 400, "messages", id="no-msgs"),
    pytest.param("chat/completions", b'{"model": "nope"}', {}, 404, None, id="unknown-model"),
    pytest.param("chat/completions", b'{"model": "e-embed"}', {}, 404, None, id="embed-model"),
    pytest.param(
        "chat/completions",
        json.dumps({**CHAT, "stream": True}).encode(),
        {},
        400,
        "stream",
        id="stream",
    ),
    pytest.param("embeddings", b'{"model": "e-embed"}', {}, 400, "input", id="no-input"),
    pytest.param("embeddings", BODY, {}, 404, None, id="chat-model-embedded"),
    pytest.param("completions", BODY, {}, 404, None, id="unknown-endpoint"),
    *(
        pytest.param(
            "chat/completions",
            BODY,
            {"x-tokenway-webhook": url},
            400,
            "x-tokenway-webhook",
            id=f"webhook={url}",
        )
        for url in ("ftp://x.test/h", "not a url", "https://", "http://h:99999/", "/relative")
    ),
    *(
        pytest.param(
            "chat/completions",
            BODY,
            {"x-tokenway-deadline-s": d},
            400,
            "x-tokenway-deadline-s",
            id=f"deadline={d}",
        )
        for d in ("0", "-5", "1.5", "1e9", "abc", "86401", "")
    ),
    pytest.param(
        "chat/completions", BODY, {"x-tokenway-tags": "oops"}, 400, "x-tokenway-tags", id="tags"
    ),
    pytest.param(
        "chat/completions",
        BODY,
        {"x-tokenway-regions": ",,"},
        400,
        "x-tokenway-regions",
        id="regions",
    ),
]


@pytest.mark.parametrize(("path", "content", "headers", "status", "param"), BAD)
def test_bad_input_is_a_4xx_in_openais_shape(
    stack: Stack, path: str, content: bytes, headers: dict[str, str], status: int, param: str | None
) -> None:
    resp = httpx.post(
        f"{stack.url}/v1/async/{path}",
        content=content,
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json", **headers},
    )
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] in ("invalid_request_error", "not_found_error")
    if param is not None:
        assert err["param"] == param


def test_a_task_id_with_nul_is_a_400(stack: Stack) -> None:
    # PostgreSQL text cannot hold U+0000: the store would have failed the lookup (a 500)
    for method, path in (("GET", "task_a%00b"), ("POST", "task_a%00b/cancel")):
        resp = httpx.request(
            method,
            f"{stack.url}/v1/async/tasks/{path}",
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == "task_id"


def test_the_sdk_raises_its_own_classes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        submit(client, CHAT, **{"x-tokenway-deadline-s": "999999999"})
    assert bad.value.param == "x-tokenway-deadline-s"
    with pytest.raises(openai.NotFoundError):
        client.get("/async/tasks/task_nope", cast_to=httpx.Response)
    with (
        openai.OpenAI(base_url=str(client.base_url), api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(openai.AuthenticationError),
    ):
        wrong.post("/async/chat/completions", body=CHAT, cast_to=httpx.Response)


# ---- deadlines and cancelling ---------------------------------------------------------------


def test_a_task_past_its_deadline_unrun_ends_expired(stack: Stack, tight: openai.OpenAI) -> None:
    spend_the_minute(tight)
    resp = submit(tight, {**CHAT, "model": "m-tight"}, **{"x-tokenway-deadline-s": "2"})
    task = resp.json()
    assert task["expires_at"] - task["created_at"] in (2, 3)
    done = wait_task(tight, task["id"], timeout=30)
    assert done["status"] == "expired"
    assert done["expired_at"] is not None and done["expired_at"] >= task["expires_at"]
    assert done["result"] is None and done["usage"] is None and done["started_at"] is None
    assert done["error"]["code"] == "task_expired"
    # refused by the key's limit each time, so never sent: nothing to bill
    assert ledger_row(stack, done["request_id"]) is None


def test_a_queued_task_is_cancelled_and_an_ended_one_is_not(
    stack: Stack, client: openai.OpenAI, tight: openai.OpenAI
) -> None:
    spend_the_minute(tight)
    task = submit(tight, {**CHAT, "model": "m-tight"}).json()
    end = time.monotonic() + 20
    while True:
        try:
            resp = tight.post(f"/async/tasks/{task['id']}/cancel", cast_to=httpx.Response)
            break
        except openai.ConflictError:
            # the runner holds the line this instant (and will be refused): try again
            assert time.monotonic() < end
            time.sleep(0.02)
    cancelled = resp.json()
    assert resp.status_code == 200 and cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] is not None and cancelled["result"] is None
    assert cancelled["error"]["code"] == "task_cancelled"
    time.sleep(0.5)
    assert get_task(tight, task["id"])["status"] == "cancelled"  # and it stays so
    assert ledger_row(stack, cancelled["request_id"]) is None
    with pytest.raises(openai.ConflictError):
        tight.post(f"/async/tasks/{task['id']}/cancel", cast_to=httpx.Response)

    done = wait_task(client, submit(client, CHAT).json()["id"])
    with pytest.raises(openai.ConflictError) as conflict:
        client.post(f"/async/tasks/{done['id']}/cancel", cast_to=httpx.Response)
    assert "completed" in conflict.value.message


def test_tasks_are_not_batches(client: openai.OpenAI) -> None:
    task_id = submit(client, CHAT).json()["id"]
    assert task_id not in {b.id for b in client.batches.list()}
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(task_id)
    wait_task(client, task_id)


# ---- the store, on SQLite and PostgreSQL --------------------------------------------------

NOW = 1_000_000.0


@pytest.fixture
def store(ledger_url: str) -> Iterator[JobStore]:
    s = JobStore(open_database(ledger_url))
    s.ensure()
    yield s
    s.close()


def _task(store: JobStore, task_id: str, webhook: str | None = None) -> None:
    store.tasks.create(
        {
            "id": task_id,
            "owner": "app",
            "principal": msgspec.json.encode(Principal(name="app")).decode(),
            "endpoint": "/v1/chat/completions",
            "model": "m",
            "completion_window": "60s",
            "created_at": int(NOW),
            "expires_at": int(NOW) + 60,
            "headers": None,
            "webhook": webhook,
        },
        '{"model":"m"}',
    )


def test_cancel_takes_a_queued_line_and_never_a_running_one(store: JobStore) -> None:
    _task(store, "task_a")
    lines = store.lines
    (line,) = lines.claim("task_a", "r1", 5, NOW, NOW + 60, int(NOW))
    assert (line.line, line.custom_id) == (1, "task")
    assert lines.mark_sent("task_a", 1, "r1", NOW + 1, 5, "p/m")
    assert not store.tasks.cancel("task_a", "app", int(NOW))  # it runs
    with pytest.raises(LookupError):
        store.tasks.cancel("task_a", "other", int(NOW))  # not theirs
    # refused upstream-side, it goes back to the queue unsent, and forgets that send
    lines.release("task_a", 1, "r1", NOW + 2, unsend=True)
    row = store.tasks.get("task_a", "app")
    assert row is not None and row["line_state"] == "queued" and row["first_sent"] is None
    assert store.tasks.cancel("task_a", "app", int(NOW) + 3)
    assert lines.claim("task_a", "r2", 5, NOW + 5, NOW + 60, int(NOW)) == []
    assert store.finalizable(NOW + 5, int(NOW) + 5) == [("task_a", "cancelled")]
    assert store.claim_finalize("task_a", "cancelled", "r2", NOW + 5, NOW + 60, int(NOW) + 5)
    assert store.tasks.end("task_a", "cancelled", "r2", int(NOW) + 5)
    row = store.tasks.get("task_a", "app")
    assert row is not None and (row["status"], row["cancelled_at"]) == ("cancelled", NOW + 5)
    assert store.get_batch("app", "task_a") is None  # not a batch
    assert store.tasks.get("task_a", "other") is None


def test_a_finished_task_ends_with_its_result_and_queues_its_webhook_once(
    store: JobStore,
) -> None:
    _task(store, "task_b", webhook="https://hooks.test/h")
    store.lines.claim("task_b", "r", 1, NOW, NOW + 60, int(NOW))
    store.lines.mark_sent("task_b", 1, "r", NOW + 1, 5, "p/m")
    assert store.lines.finish(
        "task_b", 1, "r", ok=False, status=400, response='{"error":{}}', row=None, now=NOW + 2
    )
    assert store.tasks.claim_hooks("h1", 5, NOW + 2, NOW + 30) == []  # not ended yet
    assert store.claim_finalize("task_b", "completed", "r", NOW + 2, NOW + 60, int(NOW) + 2)
    assert store.tasks.end("task_b", "completed", "r", int(NOW) + 2)
    assert not store.tasks.end("task_b", "completed", "r", int(NOW) + 2)  # once
    row = store.tasks.get("task_b", None)
    assert row is not None
    assert (row["status"], row["result_status"], row["started_at"]) == ("failed", 400, NOW + 1)
    # two replicas look for due deliveries: one gets it
    (hook,) = store.tasks.claim_hooks("h1", 5, NOW + 3, NOW + 30)
    assert (hook["id"], hook["webhook"], hook["hook_attempts"]) == (
        "task_b",
        "https://hooks.test/h",
        0,
    )
    assert store.tasks.claim_hooks("h2", 5, NOW + 3, NOW + 30) == []
    store.tasks.hook_done(
        "task_b", "h1", delivered=False, error="HTTP 500", retry_at=NOW + 10, clock=0
    )
    assert store.tasks.claim_hooks("h2", 5, NOW + 9, NOW + 30) == []  # not due yet
    (again,) = store.tasks.claim_hooks("h2", 5, NOW + 10, NOW + 30)
    assert again["hook_attempts"] == 1
    store.tasks.hook_done(
        "task_b", "h2", delivered=True, error=None, retry_at=None, clock=int(NOW) + 10
    )
    row = store.tasks.get("task_b", None)
    assert row is not None and (row["hook_state"], row["hook_attempts"]) == ("delivered", 2)
    assert store.tasks.claim_hooks("h1", 5, NOW + 100, NOW + 130) == []
    # kept for its retention, then gone with its line
    assert store.tasks.reap(int(NOW)) == 0
    assert store.tasks.reap(int(NOW) + 3) == 1
    assert store.tasks.get("task_b", None) is None


# ---- a gateway killed mid-task ------------------------------------------------------------


@pytest.fixture
def deployment(tmp_path: Path, ledger_url: str) -> Iterator[Deployment]:
    d = Deployment(tmp_path, ledger_url)
    yield d
    d.stop()


def test_tasks_survive_sigkill_with_one_result_and_one_ledger_row_each(
    deployment: Deployment,
) -> None:
    deployment.start_gateway()
    client = openai.OpenAI(base_url=deployment.url + "/v1", api_key="sk-app", max_retries=3)
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": "tell me about it"}]}
        ids = [submit(client, body).json()["id"] for _ in range(12)]
        end = time.monotonic() + 60
        while sum(get_task(client, i)["status"] == "completed" for i in ids) < 3:
            assert time.monotonic() < end, "no task completed"
            time.sleep(0.05)
        deployment.kill_gateway()
        deployment.start_gateway()
        done = [wait_task(client, i, timeout=180) for i in ids]
    finally:
        client.close()
    assert {(t["status"], t["result"]["status_code"]) for t in done} == {("completed", 200)}
    expected = {t["request_id"] for t in done}
    assert expected == {task_request_id(i) for i in ids}

    rows = list(read_requests(deployment.ledger))
    assert len(rows) == len(ids)  # one request row per task, even for those run twice
    assert {r["request_id"] for r in rows} == expected
    assert {(r["mode"], r["status"]) for r in rows} == {("async", 200)}
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in read_attempts(deployment.ledger):
        attempts.setdefault(a["request_id"], []).append(a)
    lost = 0
    for r in rows:
        tried = attempts[r["request_id"]]
        served = [a for a in tried if a["flag"] == "OK"]
        assert len(served) == 1
        for a in tried:
            if a["flag"] == "LOST":
                lost += 1
                assert a["usage_source"] == "estimated" and a["cost_usd"] > 0
        assert r["cost_usd"] == sum((a["cost_usd"] for a in tried), Decimal(0))
        assert r["revenue_usd"] == served[0]["cost_usd"]  # the client pays once
    assert lost >= 1  # the kill landed while tasks were in flight
