"""Requests tokenway makes itself (batch lines, async tasks), served in-process by the very
handlers that serve clients' HTTP requests: the same parsing, admission, routing, failover,
pricing and accounting, with no socket in between.

The caller describes the request with an `InternalCall`: whose it is (a `Principal`, at low
priority for background work), its ledger request id and start time (a batch line's are
deterministic, so a line re-run after a crash is the same ledger row), its mode, the request
headers it carries (an async task's routing headers), and attempts a process that died had
already sent for it. `call()` hands the app an ASGI scope that carries the
call under `INTERNAL` (a key no HTTP server sets, so no client can forge it), collects the
response, and returns it with the request row the handler produced. That row does not go to the
ledger: the caller gets it, so that it can store it durably beside the result first.

`serves(path)` is the one place that says which endpoints can be called this way; an endpoint
joins it once its handler builds its context with `InternalCall.context` (through the gateway's
`_context`), as chat completions, embeddings and Responses (through the chat path) do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from tokenway.accounting.ledger import RequestRow
from tokenway.domain.types import Principal
from tokenway.gateway.context import RequestContext
from tokenway.runtime import Runtime

__all__ = ["INTERNAL", "Answer", "InternalCall", "LostAttempt", "call", "serves"]

INTERNAL = "tokenway.internal"
"""The ASGI scope key under which an `InternalCall` rides."""

_SERVED = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/responses"})

App = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def serves(path: str) -> bool:
    """Whether `path` can be called in-process."""
    return path in _SERVED


class LostAttempt(NamedTuple):
    """An upstream attempt a dead process sent and never recorded: its target, the prompt
    tokens it carried (estimated) and when it was sent (epoch seconds)."""

    provider: str
    model: str
    prompt_tokens: int
    at: float


@dataclass(slots=True)
class InternalCall:
    """Who makes an in-process request and how it is accounted."""

    principal: Principal
    request_id: str
    mode: str = "realtime"
    started: float | None = None
    """The request's start (epoch seconds) on the ledger; None: now."""
    lost: Sequence[LostAttempt] = ()
    headers: Sequence[tuple[str, str]] = ()
    """Request headers (lower-case names) beside the body's: `x-tokenway-regions`, ..."""
    rows: list[RequestRow] = field(default_factory=list)
    """Request rows the handler finished (at most one), instead of writing them."""

    def context(self, rt: Runtime, api: str, model: str) -> RequestContext:
        """The handler's `RequestContext` for this call."""
        ctx = RequestContext(rt, self.request_id, api, self.principal, model)
        ctx.mode = self.mode
        ctx.sink = self.rows.append
        if self.started is not None:
            ctx.backdate(self.started)
        for lost in self.lost:
            ctx.attempt_lost(lost.provider, lost.model, lost.prompt_tokens, lost.at)
        return ctx


class Answer(NamedTuple):
    """What the handler answered, and the request row it produced (None when the request was
    refused before it ran: bad input, limits, capacity)."""

    status: int
    headers: dict[str, str]
    body: bytes
    row: RequestRow | None


def _not_served(path: str) -> Answer:
    body = msgspec.json.encode(
        {
            "error": {
                "message": f"tokenway does not serve {path} yet, so this request was not run.",
                "type": "invalid_request_error",
                "param": "url",
                "code": "unsupported_endpoint",
            }
        }
    )
    return Answer(501, {"content-type": "application/json"}, body, None)


async def call(app: App, path: str, body: bytes, internal: InternalCall) -> Answer:
    """POST `body` to `path` on `app` in-process, as `internal` says."""
    if not serves(path):
        return _not_served(path)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in internal.headers),
        ],
        "client": None,
        "server": None,
        INTERNAL: internal,
    }
    delivered = False
    never: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        # Nothing more will come (and the caller never goes away): wait until cancelled.
        return await asyncio.shield(never)

    status = 500
    headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for k, v in message.get("headers", ()):
                headers[k.decode("latin-1")] = v.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    finally:
        never.cancel()
    row = internal.rows[-1] if internal.rows else None
    return Answer(status, headers, b"".join(chunks), row)
