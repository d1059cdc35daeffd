"""Async tasks' operations, for the HTTP endpoints (gateway/tasks.py): submit a request to run
in the background, read the task, cancel it while it is queued. A task belongs to the key
that submitted it; another key gets 404.

A submission is checked as the endpoint itself would check it (a JSON object, a model the key
may use, a body the endpoint parses; `stream` is refused, as a task's result is one whole
answer) so that bad input is a 400 now rather than a failed task later, and so are its
headers:

    x-tokenway-deadline-s   whole seconds from now, 1 to `async.max_deadline_s`
                            (default `async.default_deadline_s`)
    x-tokenway-webhook      an http(s) URL to POST the task to when it ends (batch/webhook.py);
                            refused unless `async.webhook_secret` is configured
    x-tokenway-regions, x-tokenway-task, x-tokenway-tags
                            checked, kept and sent again with the request when it runs, so
                            that residency and routing are what they would have been
    idempotency-key         1 to 255 printable ASCII characters: the key's submissions with
                            it make one task while that task is kept (until `retention_days`
                            after it ends); a resubmission of the same endpoint and body gets
                            that task, a different one a 409

A replay is told from a different request by a fingerprint of the endpoint and of the body as
parsed (so the JSON's spacing and key order do not matter); the headers of the first
submission stand, as a client that retries sends the same ones. Listing (`tasks`) pages as the
Batch API does, newest first, optionally by status.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

import msgspec

from tokenway.auth.access import check_model
from tokenway.batch import ids
from tokenway.batch.egress import private_literal
from tokenway.batch.errors import Conflict
from tokenway.batch.listing import limit_of, list_object
from tokenway.batch.objects import task_object
from tokenway.batch.runner import Runner
from tokenway.batch.store import JobStore
from tokenway.batch.task_store import STATUSES
from tokenway.domain.types import Principal
from tokenway.errors import BadRequest, NotFound, Unsupported
from tokenway.gateway.apis import OPENAI_CHAT
from tokenway.gateway.attribution import parse_tags, task_of
from tokenway.runtime import Runtime
from tokenway.store import StoreUnavailable
from tokenway.translate.embeddings import parse_openai_request as parse_embeddings

__all__ = [
    "DEADLINE_HEADER",
    "ENDPOINTS",
    "HEADERS",
    "IDEMPOTENCY_HEADER",
    "WEBHOOK_HEADER",
    "Submitted",
    "TaskService",
]

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embedding"}
"""The endpoints a task may run, and the kind of model each takes."""

DEADLINE_HEADER = "x-tokenway-deadline-s"
WEBHOOK_HEADER = "x-tokenway-webhook"
IDEMPOTENCY_HEADER = "idempotency-key"
_CARRIED = ("x-tokenway-regions", "x-tokenway-task", "x-tokenway-tags")
HEADERS = (DEADLINE_HEADER, WEBHOOK_HEADER, IDEMPOTENCY_HEADER, *_CARRIED)
"""The request headers a submission may carry."""

_MAX_URL = 2048
_MAX_IDEMPOTENCY_KEY = 255
_LIST_DEFAULT, _LIST_MOST = 20, 100  # as GET /v1/batches
_encode = msgspec.json.encode
T = TypeVar("T")


class StoreCall(Protocol):
    """Runs a job store call off the event loop (`batch.errors.in_store`, bound)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class Submitted(NamedTuple):
    """A submission's task, and whether it was made earlier (a replay of its idempotency
    key) rather than now."""

    task: dict[str, Any]
    replayed: bool


def _missing(task_id: str) -> NotFound:
    return NotFound(f"No task found with id '{task_id}'.", param="task_id")


class TaskService:
    """Async tasks for one gateway replica; the replica's `runner` runs them."""

    def __init__(self, rt: Runtime, store: JobStore, runner: Runner, call: StoreCall) -> None:
        self.rt = rt
        self.cfg = rt.config.raw.async_
        self.store = store
        self.runner = runner
        self._call = call

    async def create(
        self, principal: Principal, endpoint: str, body: bytes, headers: Mapping[str, str]
    ) -> Submitted:
        """Queue `body` for `endpoint` (a key of `ENDPOINTS`) with the request's `headers`
        (lower-case names, of `HEADERS`); returns the new task, or the one made earlier with
        the same idempotency key and request (a `Conflict` if the request differs)."""
        idempotency_key = _idempotency_key(headers.get(IDEMPOTENCY_HEADER))
        raw = _object(body)
        check_model(self.rt.config.models, principal, raw.get("model"), ENDPOINTS[endpoint])
        if raw.get("stream") not in (None, False):
            raise BadRequest(
                "stream: a task's result is one whole answer; leave stream unset or false.",
                param="stream",
            )
        try:
            if endpoint == "/v1/embeddings":
                parse_embeddings(raw)
            else:
                OPENAI_CHAT.parse_request(raw)
        except Unsupported:
            pass  # valid, for an upstream of the same protocol: the handler decides
        carried = _carried(headers, raw)
        deadline_s = self._deadline(headers.get(DEADLINE_HEADER))
        webhook = self._webhook(headers.get(WEBHOOK_HEADER))
        now = self.rt.now()
        task_id = ids.task_id()
        row = {
            "id": task_id,
            "owner": principal.name,
            "principal": _encode(principal).decode(),
            "endpoint": endpoint,
            "model": raw["model"],
            "completion_window": f"{deadline_s}s",
            "created_at": int(now),
            "expires_at": math.ceil(now + deadline_s),
            "headers": _encode(carried).decode() if carried else None,
            "webhook": webhook,
            "idempotency_key": idempotency_key,
            "fingerprint": None if idempotency_key is None else _fingerprint(endpoint, raw),
        }
        held = await self._call(self.store.tasks.create, row, _encode(raw).decode())
        if held is None:
            self.runner.wake(urgent=True)
            return Submitted(await self.task(principal, task_id), replayed=False)
        if held.fingerprint != row["fingerprint"]:
            raise Conflict(
                f"{IDEMPOTENCY_HEADER}: this idempotency key was already used for a different "
                f"request (task {held.task_id}: another endpoint or body); send a new key for a "
                "new request, or the same request again to get that task.",
                param=IDEMPOTENCY_HEADER,
                code="idempotency_key_reused",
            )
        return Submitted(await self.task(principal, held.task_id), replayed=True)

    async def tasks(
        self,
        principal: Principal,
        *,
        limit: str | None = None,
        after: str | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        """`principal`'s tasks, newest first, in the list shape and pages of `GET
        /v1/batches` (`limit` from 1 to 100, 20 by default; `after` a task id), only those
        of `status` if given; the query parameters as they came."""
        if status is not None and status not in STATUSES:
            raise BadRequest(
                f"status: must be one of {', '.join(STATUSES)}; got {status[:40]!r}.",
                param="status",
            )
        n = limit_of(limit, _LIST_DEFAULT, _LIST_MOST)
        found = await self._call(
            lambda: self.store.tasks.list_tasks(principal.name, limit=n, after=after, status=status)
        )
        return list_object(found, after, task_object)

    async def task(self, principal: Principal, task_id: str) -> dict[str, Any]:
        """The task, if `principal`'s key submitted it."""
        row = await self._call(self.store.tasks.get, task_id, principal.name)
        if row is None:
            raise _missing(task_id)
        return task_object(row)

    async def cancel(self, principal: Principal, task_id: str) -> dict[str, Any]:
        """Cancel a queued task (409 once it runs or has ended); returns it."""
        try:
            taken = await self._call(
                self.store.tasks.cancel, task_id, principal.name, int(self.rt.now())
            )
        except LookupError:
            raise _missing(task_id) from None
        if not taken:
            status = (await self.task(principal, task_id))["status"]
            raise Conflict(
                f"Only a queued task can be cancelled; this one is {status}.", param="task_id"
            )
        # End it here, so the answer says cancelled; should the store fail now, the runner
        # ends it on its next pass.
        with contextlib.suppress(StoreUnavailable):
            await self.runner.end(task_id, "cancelled")
        return await self.task(principal, task_id)

    def _deadline(self, value: str | None) -> int:
        if value is None:
            return self.cfg.default_deadline_s
        most = self.cfg.max_deadline_s
        text = value.strip()
        seconds = int(text) if text.isdigit() else 0
        if not 1 <= seconds <= most:
            raise BadRequest(
                f"{DEADLINE_HEADER}: expected a whole number of seconds from 1 to {most}, "
                f"got {value[:40]!r}.",
                param=DEADLINE_HEADER,
            )
        return seconds

    def _webhook(self, value: str | None) -> str | None:
        if value is None:
            return None
        if self.cfg.webhook_secret is None:
            raise BadRequest(
                f"{WEBHOOK_HEADER}: this gateway sends no webhooks: it has no "
                "async.webhook_secret to sign them with.",
                param=WEBHOOK_HEADER,
            )
        url = value.strip()
        if not _http_url(url):
            raise BadRequest(
                f"{WEBHOOK_HEADER}: expected an http:// or https:// URL with a host, at most "
                f"{_MAX_URL} characters.",
                param=WEBHOOK_HEADER,
            )
        if not self.cfg.webhook_private and private_literal(urlsplit(url).hostname or ""):
            raise BadRequest(
                f"{WEBHOOK_HEADER}: webhooks go to public addresses only on this gateway.",
                param=WEBHOOK_HEADER,
            )
        return url


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= _MAX_IDEMPOTENCY_KEY or not all(" " <= c <= "~" for c in value):
        raise BadRequest(
            f"{IDEMPOTENCY_HEADER}: expected 1 to {_MAX_IDEMPOTENCY_KEY} printable ASCII "
            "characters.",
            param=IDEMPOTENCY_HEADER,
        )
    return value


def _fingerprint(endpoint: str, raw: dict[str, Any]) -> str:
    """What tells a replay from another request under one idempotency key: the endpoint and
    the body as parsed, its keys sorted, so that spacing and key order do not count."""
    canonical = msgspec.json.encode(raw, order="sorted")
    return hashlib.sha256(endpoint.encode() + b"\n" + canonical).hexdigest()


def _http_url(url: str) -> bool:
    if len(url) > _MAX_URL or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0  # a malformed port raises ValueError
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok


def _object(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest("Request body is empty; expected a JSON object.")
    try:
        doc = msgspec.json.decode(body)
    except (ValueError, RecursionError):  # msgspec.DecodeError, or malformed UTF-8
        raise BadRequest("Request body is not valid JSON; expected a JSON object.") from None
    if not isinstance(doc, dict):
        raise BadRequest("Request body must be a JSON object.")
    return doc


def _carried(headers: Mapping[str, str], raw: dict[str, Any]) -> list[tuple[str, str]]:
    """The routing headers to send with the request when it runs, checked now. The task class
    is resolved here (header, else the `task` tag), so the runner knows the route."""
    out: list[tuple[str, str]] = []
    regions = headers.get("x-tokenway-regions")
    if regions is not None:
        if not any(r.strip() for r in regions.split(",")):
            raise BadRequest(
                "x-tokenway-regions: expected region names separated by commas",
                param="x-tokenway-regions",
            )
        out.append(("x-tokenway-regions", regions))
    tags_header = headers.get("x-tokenway-tags")
    tags = parse_tags(tags_header, raw.get("metadata"))
    task = task_of(headers.get("x-tokenway-task"), tags)
    if task is not None:
        out.append(("x-tokenway-task", task))
    if tags_header is not None:
        out.append(("x-tokenway-tags", tags_header))
    return out
