"""Async tasks against a real gateway and simulated providers, driven with the official `openai`
SDK's raw calls: submit (202), poll to the end, the result and a `mode=async` ledger row priced
with the async multiplier, key scoping, a signed webhook received by a server of the test's
own, 4xx errors in OpenAI's shape, expiry at the deadline, cancelling, listing a key's tasks,
and idempotent submission."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
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
from tokenway.batch.task_store import Held
from tokenway.batch.tasks import _fingerprint
from tokenway.batch.webhook import verify
from tokenway.config.load import ConfigError, parse_config
from tokenway.domain.types import Principal
from tokenway.store import open_database

from .conftest import KEY, TERMINAL, module_stack, stack_doc
from .test_durability import Deployment

SECRET = "whsec-test-0123456789abcdef"
TIGHT_KEY = "sk-batch-tight"
# quick webhooks for the tests, to a receiver of their own on loopback
ASYNC: dict[str, Any] = {
    "webhook_secret": SECRET,
    "webhook_backoff_s": 0.2,
    "webhook_attempts": 3,
    "webhook_timeout_s": 2,
    "webhook_private": True,
}
# keys of their own for the tests that count a key's tasks, which other tests must not add to
LISTER_KEY, IDEM_KEY, RACER_KEY = "sk-async-lister", "sk-async-idem", "sk-async-racer"
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
    doc["keys"] += [
        {"name": "lister", "key": LISTER_KEY},
        {"name": "idem", "key": IDEM_KEY},
        {"name": "racer", "key": RACER_KEY},
    ]
    doc["async"] = dict(ASYNC)
    return doc


stack = module_stack(_doc, "async")


@pytest.fixture(scope="module")
def tight(stack: Stack) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TIGHT_KEY, max_retries=0)
    yield c
    c.close()


def sdk_client(stack: Stack, key: str) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0)
    yield c
    c.close()


@pytest.fixture(scope="module")
def lister(stack: Stack) -> Iterator[openai.OpenAI]:
    yield from sdk_client(stack, LISTER_KEY)


@pytest.fixture(scope="module")
def idem(stack: Stack) -> Iterator[openai.OpenAI]:
    yield from sdk_client(stack, IDEM_KEY)


@pytest.fixture(scope="module")
def racer(stack: Stack) -> Iterator[openai.OpenAI]:
    yield from sdk_client(stack, RACER_KEY)


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


def list_tasks(client: openai.OpenAI, **params: str | int) -> dict[str, Any]:
    resp = client.get("/async/tasks", cast_to=httpx.Response, options={"params": params})
    doc: dict[str, Any] = resp.json()
    return doc


def list_all(client: openai.OpenAI, **params: str | int) -> list[dict[str, Any]]:
    """Every task the key may list, page by page."""
    tasks: list[dict[str, Any]] = []
    while True:
        doc = list_tasks(client, limit=100, **params)
        tasks += doc["data"]
        if not doc["has_more"]:
            return tasks
        params["after"] = doc["last_id"]


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


# ---- listing ------------------------------------------------------------------------------


def test_a_keys_tasks_list_newest_first_in_pages_by_status(
    lister: openai.OpenAI, client: openai.OpenAI, other: openai.OpenAI
) -> None:
    made = [submit(lister, CHAT).json()["id"] for _ in range(5)]
    made.append(submit(lister, {**CHAT, "model": "m-dead"}).json()["id"])
    ended = {t: wait_task(lister, t) for t in made}
    newest_first = made[::-1]

    everything = list_tasks(lister, limit=100)
    assert everything["object"] == "list" and everything["has_more"] is False
    assert [t["id"] for t in everything["data"]] == newest_first
    assert (everything["first_id"], everything["last_id"]) == (newest_first[0], made[0])
    # each is the task as GET /v1/async/tasks/{id} shows it
    assert everything["data"] == [ended[t] for t in newest_first]
    assert [t["id"] for t in list_tasks(lister)["data"]] == newest_first  # 20 by default

    pages, after = [], None
    while True:
        doc = list_tasks(lister, limit=4, **({"after": after} if after else {}))
        pages.append([t["id"] for t in doc["data"]])
        assert (doc["first_id"], doc["last_id"]) == (pages[-1][0], pages[-1][-1])
        if not doc["has_more"]:
            break
        after = doc["last_id"]
    assert pages == [newest_first[:4], newest_first[4:]]

    completed = list_tasks(lister, status="completed", limit=3)
    assert [t["id"] for t in completed["data"]] == newest_first[1:4]
    assert completed["has_more"] is True
    rest = list_tasks(lister, status="completed", limit=3, after=completed["last_id"])
    assert [t["id"] for t in rest["data"]] == newest_first[4:] and rest["has_more"] is False
    assert {t["status"] for t in completed["data"] + rest["data"]} == {"completed"}
    failed = list_tasks(lister, status="failed")
    assert [t["id"] for t in failed["data"]] == [made[-1]]
    assert failed["data"][0]["result"]["status_code"] == 503
    # a cursor need not match the filter: it is where the client stopped reading
    assert [t["id"] for t in list_tasks(lister, status="completed", after=made[-1])["data"]] == (
        newest_first[1:]
    )
    for status in ("queued", "in_progress", "expired", "cancelled"):
        assert list_tasks(lister, status=status) == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }

    # only the key's own: others list none of them, nor page from one of their ids
    for someone in (client, other):
        assert not {t["id"] for t in list_all(someone)} & set(made)
        with pytest.raises(openai.NotFoundError) as err:
            list_tasks(someone, after=made[0])
        assert err.value.body["param"] == "after"  # type: ignore[index]
    assert {t["id"] for t in list_all(lister)} == set(made)


@pytest.mark.parametrize(
    ("query", "status", "param"),
    [
        pytest.param("limit=0", 400, "limit", id="limit-0"),
        pytest.param("limit=101", 400, "limit", id="limit-101"),
        pytest.param("limit=ten", 400, "limit", id="limit-word"),
        pytest.param("limit=", 400, "limit", id="limit-empty"),
        pytest.param("status=done", 400, "status", id="status-unknown"),
        pytest.param("status=COMPLETED", 400, "status", id="status-case"),
        pytest.param("status=", 400, "status", id="status-empty"),
        pytest.param("status=completed%00", 400, "status", id="status-nul"),
        pytest.param("after=task_a%00b", 400, "after", id="after-nul"),
        pytest.param("after=task_nope", 404, "after", id="after-unknown"),
    ],
)
def test_bad_list_parameters_are_4xx_in_openais_shape(
    stack: Stack, query: str, status: int, param: str
) -> None:
    resp = httpx.get(
        f"{stack.url}/v1/async/tasks?{query}", headers={"authorization": f"Bearer {KEY}"}
    )
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == ("invalid_request_error" if status == 400 else "not_found_error")
    assert err["param"] == param


# ---- idempotent submission -------------------------------------------------------------------


def test_a_replayed_idempotency_key_gets_the_same_task(
    stack: Stack, idem: openai.OpenAI, client: openai.OpenAI
) -> None:
    key = {"idempotency-key": "order-1234 retry/ok=~"}
    first = submit(idem, CHAT, **key)
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    task = first.json()
    again = submit(idem, CHAT, **key)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert again.json()["id"] == task["id"]
    # the same request, spaced and ordered otherwise, is the same request
    respaced = httpx.post(
        f"{stack.url}/v1/async/chat/completions",
        content=b'{ "messages" : [{"content": "tell me a story", "role": "user"}],\n'
        b' "model": "m-chat" }',
        headers={"authorization": f"Bearer {IDEM_KEY}", **key},
    )
    assert respaced.status_code == 200 and respaced.json()["id"] == task["id"]
    # another API key's idempotency keys are its own
    theirs = submit(client, CHAT, **key)
    assert theirs.status_code == 202 and theirs.json()["id"] != task["id"]
    # once the task has ended, a replay gets it as it ended, and no second run happens
    done = wait_task(idem, task["id"])
    replay = submit(idem, CHAT, **key)
    assert replay.status_code == 200 and replay.json() == done
    assert done["status"] == "completed"
    assert ledger_row(stack, done["request_id"]) is not None
    # a new key is a new task
    fresh = submit(idem, CHAT, **{"idempotency-key": "order-1235"})
    assert fresh.status_code == 202 and fresh.json()["id"] != task["id"]
    wait_task(idem, fresh.json()["id"])
    wait_task(client, theirs.json()["id"])


def test_an_idempotency_key_reused_for_another_request_is_a_409(
    stack: Stack, idem: openai.OpenAI
) -> None:
    key = {"idempotency-key": "reused"}
    task = submit(idem, CHAT, **key).json()
    other_body = {**CHAT, "messages": [{"role": "user", "content": "another story"}]}
    for body in (other_body, {**CHAT, "temperature": 0.5}):
        with pytest.raises(openai.ConflictError) as err:
            submit(idem, body, **key)
        assert err.value.param == "idempotency-key"
        assert err.value.code == "idempotency_key_reused"
        assert task["id"] in err.value.message and "different request" in err.value.message
    raw = httpx.post(
        f"{stack.url}/v1/async/chat/completions",
        json=other_body,
        headers={"authorization": f"Bearer {IDEM_KEY}", **key},
    )
    assert raw.status_code == 409
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
    assert raw.json()["error"]["type"] == "invalid_request_error"
    # the key still holds the first request's task
    assert submit(idem, CHAT, **key).json()["id"] == task["id"]
    wait_task(idem, task["id"])


def test_a_request_differing_only_in_endpoint_has_another_fingerprint() -> None:
    body = {"model": "m", "input": "x"}
    same = _fingerprint("/v1/embeddings", {"input": "x", "model": "m"})
    assert _fingerprint("/v1/embeddings", body) == same
    assert _fingerprint("/v1/chat/completions", body) != same


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"k" * 256, id="too-long"),
        pytest.param("cl\u00e9".encode("latin-1"), id="not-ascii"),
        pytest.param(b"a\tb", id="tab"),
    ],
)
def test_a_bad_idempotency_key_is_a_400(stack: Stack, value: bytes) -> None:
    resp = httpx.post(
        f"{stack.url}/v1/async/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {IDEM_KEY}", "idempotency-key": value},
    )
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"] == "idempotency-key" and "printable ASCII" in err["message"]


def test_a_255_character_idempotency_key_is_accepted(idem: openai.OpenAI) -> None:
    resp = submit(idem, CHAT, **{"idempotency-key": "k" * 255})
    assert resp.status_code == 202
    wait_task(idem, resp.json()["id"])


def test_concurrent_duplicate_submissions_make_one_task_and_one_ledger_row(
    stack: Stack, racer: openai.OpenAI
) -> None:
    n = 8
    start = threading.Barrier(n)
    answers: list[httpx.Response] = []
    errors: list[BaseException] = []

    def send() -> None:
        start.wait()
        try:
            answers.append(submit(racer, CHAT, **{"idempotency-key": "race"}))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(a.status_code for a in answers) == [200] * (n - 1) + [202]
    (task_id,) = {a.json()["id"] for a in answers}
    done = wait_task(racer, task_id)
    assert done["status"] == "completed"
    assert [t["id"] for t in list_all(racer)] == [task_id]
    stack.flush()
    rows = [r for r in read_requests(stack.config.raw.storage.ledger) if r["key"] == "racer"]
    assert [r["request_id"] for r in rows] == [done["request_id"]]


# ---- the store, on SQLite and PostgreSQL --------------------------------------------------

NOW = 1_000_000.0


@pytest.fixture
def store(ledger_url: str) -> Iterator[JobStore]:
    s = JobStore(open_database(ledger_url))
    s.ensure()
    yield s
    s.close()


def _task(
    store: JobStore,
    task_id: str,
    webhook: str | None = None,
    *,
    owner: str = "app",
    created_at: int = int(NOW),
    idempotency: tuple[str, str] | None = None,
) -> Held | None:
    row: dict[str, Any] = {
        "id": task_id,
        "owner": owner,
        "principal": msgspec.json.encode(Principal(name=owner)).decode(),
        "endpoint": "/v1/chat/completions",
        "model": "m",
        "completion_window": "60s",
        "created_at": created_at,
        "expires_at": created_at + 60,
        "headers": None,
        "webhook": webhook,
    }
    if idempotency is not None:
        row["idempotency_key"], row["fingerprint"] = idempotency
    return store.tasks.create(row, '{"model":"m"}')


def _cancel(store: JobStore, task_id: str, clock: int) -> None:
    """Cancel a queued task and end it, as the API and the runner do."""
    assert store.tasks.cancel(task_id, "app", clock)
    assert store.claim_finalize(task_id, "cancelled", "f", clock, clock + 60, clock)
    assert store.tasks.end(task_id, "cancelled", "f", clock)


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


def test_a_keys_tasks_list_newest_first_by_status_and_never_anothers(store: JobStore) -> None:
    t = int(NOW)
    for n in range(1, 6):  # two pairs in the same second: the id decides
        _task(store, f"task_{n}", created_at=t + n // 2)
    _task(store, "task_9", owner="other", created_at=t + 9)
    store.create_batch(
        {
            "id": "batch_x",
            "owner": "app",
            "principal": "{}",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-x",
            "completion_window": "24h",
            "metadata": None,
            "output_expires_s": None,
            "created_at": t + 9,
            "expires_at": t + 86400,
        }
    )
    lines = store.lines
    # task_1 runs, task_3 is cancelled, task_4 completes; task_2 and task_5 are queued
    assert lines.claim("task_1", "r", 1, NOW, NOW + 60, t)
    assert lines.mark_sent("task_1", 1, "r", NOW, 5, "p/m")
    _cancel(store, "task_3", t + 1)
    assert lines.claim("task_4", "r", 1, NOW, NOW + 60, t)
    assert lines.finish("task_4", 1, "r", ok=True, status=200, response="{}", row=None, now=NOW)
    assert store.claim_finalize("task_4", "completed", "f", NOW, NOW + 60, t + 2)
    assert store.tasks.end("task_4", "completed", "f", t + 2)

    def ids(status: str | None = None, after: str | None = None, limit: int = 10) -> list[str]:
        found = store.tasks.list_tasks("app", limit=limit, after=after, status=status)
        assert found is not None
        return [r["id"] for r in found.rows]

    assert ids() == ["task_5", "task_4", "task_3", "task_2", "task_1"]
    first = store.tasks.list_tasks("app", limit=2, after=None, status=None)
    assert first is not None and first.has_more
    assert [r["id"] for r in first.rows] == ["task_5", "task_4"]
    assert ids(after="task_4", limit=2) == ["task_3", "task_2"]
    last = store.tasks.list_tasks("app", limit=2, after="task_2", status=None)
    assert last is not None and not last.has_more and [r["id"] for r in last.rows] == ["task_1"]
    # each row is what `get` reads
    assert first.rows[1] == store.tasks.get("task_4", "app")

    assert ids("queued") == ["task_5", "task_2"]
    assert ids("in_progress") == ["task_1"]
    assert ids("completed") == ["task_4"]
    assert ids("cancelled") == ["task_3"]
    assert ids("failed") == ids("expired") == ids("cancelling") == []
    assert ids("queued", after="task_4") == ["task_2"]  # the cursor need not be queued

    theirs = store.tasks.list_tasks("other", limit=9, after=None, status=None)
    assert theirs is not None and [r["id"] for r in theirs.rows] == ["task_9"]
    assert store.tasks.list_tasks("app", limit=9, after="task_9", status=None) is None
    assert store.tasks.list_tasks("app", limit=9, after="batch_x", status=None) is None
    assert store.tasks.list_tasks("other", limit=9, after="task_1", status="queued") is None
    nobody = store.tasks.list_tasks("nobody", limit=9, after=None, status=None)
    assert nobody is not None and nobody.rows == [] and not nobody.has_more


def test_an_idempotency_key_holds_one_task_per_owner_until_it_is_reaped(
    store: JobStore, ledger_url: str
) -> None:
    assert _task(store, "task_a", idempotency=("k", "fp1")) is None
    assert _task(store, "task_b", idempotency=("k", "fp1")) == Held("task_a", "fp1")
    assert _task(store, "task_c", idempotency=("k", "fp2")) == Held("task_a", "fp1")
    assert store.tasks.get("task_b", None) is None and store.tasks.get("task_c", None) is None
    assert _task(store, "task_d", owner="other", idempotency=("k", "fp1")) is None
    assert _task(store, "task_e") is None and _task(store, "task_f") is None  # no key, no claim

    # eight replicas submit one key at once: one makes the task, the others find it
    n = 8
    start = threading.Barrier(n)
    got: dict[str, Held | None] = {}

    def submit_as(replica: int) -> None:
        mine = JobStore(open_database(ledger_url))
        try:
            mine.ensure()
            start.wait()
            got[f"task_r{replica}"] = _task(mine, f"task_r{replica}", idempotency=("race", "fp"))
        finally:
            mine.close()

    threads = [threading.Thread(target=submit_as, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == n
    (winner,) = [task for task, held in got.items() if held is None]
    assert {held for held in got.values() if held is not None} == {Held(winner, "fp")}
    listed = store.tasks.list_tasks("app", limit=20, after=None, status=None)
    assert listed is not None
    assert {r["id"] for r in listed.rows} == {"task_a", "task_e", "task_f", winner}

    # the key lives as long as its task: reaped, the key makes a new task
    _cancel(store, "task_a", int(NOW))
    assert store.tasks.reap(int(NOW) + 1) == 1
    assert _task(store, "task_g", idempotency=("k", "fp2")) is None
    assert _task(store, "task_h", idempotency=("k", "fp2")) == Held("task_g", "fp2")


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
