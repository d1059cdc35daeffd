"""The HTTP surface: a pure ASGI app routing to the handlers.

    POST /v1/chat/completions        OpenAI chat completions (stream and not)
    POST /v1/messages                Anthropic Messages (stream and not)
    POST /v1/messages/count_tokens   Anthropic token counting (offline tokenizer)
    POST /v1/embeddings              OpenAI embeddings
    *    /v1/responses[/{id}[/...]]  OpenAI Responses API (gateway/responses.py)
    *    /v1/files[/{id}[/content]]  OpenAI Files API, for batches (gateway/files.py)
    *    /v1/batches[/{id}[/cancel]] OpenAI Batch API (gateway/batches.py, batch/)
    *    /v1/async/...               async tasks (gateway/tasks.py, batch/tasks.py)
    GET  /v1/models                  Anthropic shape with `anthropic-version`, else OpenAI's
    GET  /healthz /readyz /metrics   liveness, readiness, Prometheus text

Errors reach the client in its API's own shape: Anthropic's for `/v1/messages*`, OpenAI's
elsewhere. Batch lines reach the same handlers in-process (gateway/internal.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from decimal import Decimal
from typing import Any

import msgspec

from tokenway.auth.access import check_model
from tokenway.auth.keys import secret_from_headers
from tokenway.batch.service import BatchService
from tokenway.domain.types import ChatRequest, Message, Principal, TextBlock
from tokenway.errors import (
    AllTargetsFailed,
    BadRequest,
    BudgetExceeded,
    ClientError,
    NotFound,
    PermissionDenied,
    RateLimited,
    TokenwayError,
    Unsupported,
)
from tokenway.execution.retry import Deadline
from tokenway.gateway import admin_keys, batches, chat, embeddings, files, responses, tasks
from tokenway.gateway.apis import ANTHROPIC_MESSAGES, OPENAI_CHAT, ClientApi
from tokenway.gateway.asgi import (
    ClientGone,
    Headers,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    respond,
)
from tokenway.gateway.attribution import end_user, parse_tags, task_of
from tokenway.gateway.context import RequestContext
from tokenway.gateway.internal import INTERNAL
from tokenway.limits.budget import Payer
from tokenway.limits.priority import FREE
from tokenway.routing.router import Route, eligible, needs, order
from tokenway.runtime import Runtime
from tokenway.telemetry.log import log
from tokenway.tokens import count_text
from tokenway.translate.embeddings import parse_openai_request as parse_embeddings_request

_decode = msgspec.json.decode
_encode = msgspec.json.encode


# the output a request that sets no max_tokens is assumed to reach, for budget reservations
DEFAULT_MAX_OUTPUT = 4096


def _count_texts(texts: list[str]) -> int:
    return sum(count_text(t) for t in texts)


def _raw_user(raw: dict[str, Any]) -> Any:
    # The end user of a request only its own protocol can carry (the passthrough outline).
    meta = raw.get("metadata")
    return raw.get("user") or (meta.get("user_id") if isinstance(meta, dict) else None)


def passthrough_request(api: ClientApi, raw: dict[str, Any]) -> ChatRequest | None:
    """A minimal canonical view of a request only an upstream of its own protocol can take:
    enough to route, limit and estimate, or None if even its outline is malformed."""
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    texts: list[str] = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return None
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
    stream = raw.get("stream", False)
    options = raw.get("stream_options")
    if not isinstance(stream, bool) or not (options is None or isinstance(options, dict)):
        return None
    max_tokens = raw.get("max_tokens", raw.get("max_completion_tokens"))
    if api.protocol == "anthropic" and not isinstance(max_tokens, int):
        return None
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return None
    extras = {"stream_options": raw["stream_options"]} if "stream_options" in raw else {}
    return ChatRequest(
        model=str(raw["model"]),
        messages=[Message(role="user", content=[TextBlock(text="\n".join(texts))])],
        max_tokens=max_tokens,
        stream=stream,
        extras=extras,
    )


_ID_PREFIX = "req_" + os.urandom(6).hex()
_ids = itertools.count(1)


def new_request_id() -> str:
    """A unique request id: a per-process random prefix and a counter (no syscall per call)."""
    return f"{_ID_PREFIX}{next(_ids):010x}"


BIG_BODY = 1 << 20
"""Bodies of this many bytes or more are parsed on a worker thread: validating a few MiB of
messages takes long enough to stall every other request on the event loop."""


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a `BadRequest` that says what is wrong with it."""
    if not body:
        raise BadRequest("Request body is empty; expected a JSON object.")
    try:
        doc = _decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("Request body JSON is nested too deeply.") from None
    if not isinstance(doc, dict):
        raise BadRequest("Request body must be a JSON object.")
    return doc


class Gateway:
    """The tokenway ASGI application."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.max_body = rt.config.raw.server.max_body_bytes
        self.jobs = BatchService(rt, self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    if not self.rt.ready:
                        await self.rt.start()
                    self.jobs.start()
                except Exception as exc:  # report start-up failure to the server, then stop
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.jobs.close()
                await self.rt.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        anthropic_shape = path.startswith("/v1/messages")
        api = ANTHROPIC_MESSAGES if anthropic_shape else OPENAI_CHAT
        try:
            if path.startswith(("/admin/keys", "/admin/audit")):
                return await self._admin_keys(scope, receive, send, method, path)
            if path == "/v1/responses" or path.startswith("/v1/responses/"):
                return await responses.handle(self, scope, receive, send, method, path)
            if path == "/v1/files" or path.startswith("/v1/files/"):
                return await files.handle(
                    self.jobs, self._authenticate(scope), scope, receive, send
                )
            if path == "/v1/batches" or path.startswith("/v1/batches/"):
                return await batches.handle(
                    self.jobs, self._authenticate(scope), scope, receive, send, self.max_body
                )
            if path.startswith(tasks.PREFIX):
                return await tasks.handle(
                    self.jobs.tasks, self._authenticate(scope), scope, receive, send, self.max_body
                )
            if method == "POST":
                if path == "/v1/chat/completions":
                    return await self._chat(OPENAI_CHAT, scope, receive, send)
                if path == "/v1/messages":
                    return await self._chat(ANTHROPIC_MESSAGES, scope, receive, send)
                if path == "/v1/messages/count_tokens":
                    return await self._count_tokens(scope, receive, send)
                if path == "/v1/embeddings":
                    return await self._embeddings(scope, receive, send)
            elif method == "GET":
                if path == "/healthz":
                    return await respond(send, 200, b'{"status":"ok"}')
                if path == "/readyz":
                    ok = self.rt.ready and not self.rt.draining
                    body = b'{"status":"ready"}' if ok else b'{"status":"not ready"}'
                    return await respond(send, 200 if ok else 503, body)
                if path == "/metrics":
                    return await respond(
                        send,
                        200,
                        self.rt.metrics.render(),
                        [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
                    )
                if path in ("/v1/models", "/models"):
                    return await self._models(scope, send)
                if path.startswith("/v1/models/"):
                    return await self._model(scope, send, path[len("/v1/models/") :])
                if path.startswith("/admin/"):
                    return await self._admin(scope, send, path)
            raise NotFound(f"Unknown endpoint: {method} {path}")
        except ClientGone:
            return
        except TokenwayError as err:
            if isinstance(err, ClientError):
                self.rt.metrics.rejected.labels(api.label, str(err.status)).inc()
            await self._error(send, api, err)

    async def _error(
        self, send: Send, api: ClientApi, err: TokenwayError, extra: Headers | None = None
    ) -> None:
        headers: Headers = [(b"content-type", b"application/json"), *(extra or [])]
        retry = getattr(err, "retry_after_s", None)
        if retry is not None:
            headers.append((b"retry-after", str(max(1, round(retry))).encode()))
        if isinstance(err, BudgetExceeded):
            headers.append((b"x-should-retry", b"false"))
        await respond(send, err.status, api.error_body(err), headers)

    def _authenticate(self, scope: Scope) -> Principal:
        internal = scope.get(INTERNAL)
        if internal is not None:  # a request tokenway makes itself (gateway/internal.py)
            return internal.principal  # type: ignore[no-any-return]
        secret = secret_from_headers(header(scope, b"authorization"), header(scope, b"x-api-key"))
        return self.rt.keys.authenticate(secret)

    def _context(self, scope: Scope, api: str, principal: Principal, model: str) -> RequestContext:
        """The bookkeeping of a request that is about to run: a new request id, or what an
        in-process caller asked for (its id, mode, start and sink)."""
        internal = scope.get(INTERNAL)
        if internal is not None:
            return internal.context(self.rt, api, model)  # type: ignore[no-any-return]
        return RequestContext(self.rt, new_request_id(), api, principal, model)

    def _route(self, principal: Principal, model: Any, kind: str, task: str | None) -> Route:
        """The route for `model` and the request's task class (the model's default route when
        it lists no tier for that task)."""
        check_model(self.rt.config.models, principal, model, kind)
        routes = self.rt.routes[model]
        return routes.get(task) or routes[None]

    def _regions(self, scope: Scope, principal: Principal) -> frozenset[str] | None:
        """Regions the request may go to: the key's, narrowed by `x-tokenway-regions`."""
        allowed = principal.regions
        asked = header(scope, b"x-tokenway-regions")
        if asked is None:
            return allowed
        names = frozenset(r.strip() for r in asked.split(",") if r.strip())
        if not names:
            raise BadRequest("x-tokenway-regions: expected region names separated by commas")
        return names if allowed is None else names & allowed

    def _deadline(self, scope: Scope, route: Route) -> Deadline:
        value = header(scope, b"x-tokenway-timeout-ms")
        if value is None:
            return Deadline(route.timeout_s)
        try:
            ms = int(value)
        except ValueError:
            ms = 0
        if not 0 < ms <= 86_400_000:
            raise BadRequest(
                "x-tokenway-timeout-ms: expected a whole number of milliseconds, 1 to 86400000",
                param="x-tokenway-timeout-ms",
            )
        return Deadline(ms / 1000.0)

    async def _chat(
        self,
        api: ClientApi,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes | None = None,
        raw: dict[str, Any] | None = None,
    ) -> None:
        """A chat request of any client API; `body` when the caller has already read it, and
        `raw` when it has parsed it too (the body an upstream of the client's protocol gets)."""
        principal = self._authenticate(scope)
        if body is None:
            body = await read_body(scope, receive, self.max_body)
        big = len(body) >= BIG_BODY
        if raw is None:
            raw = await asyncio.to_thread(parse_json, body) if big else parse_json(body)
        tags = parse_tags(header(scope, b"x-tokenway-tags"), raw.get("metadata"))
        task = task_of(header(scope, b"x-tokenway-task"), tags)
        route = self._route(principal, raw.get("model"), "chat", task)
        targets = route.targets
        try:
            req = await asyncio.to_thread(api.parse_request, raw) if big else api.parse_request(raw)
        except Unsupported as exc:
            # What the canonical types cannot hold (documents, server tools, audio parts) can
            # still pass through to upstreams of the client's own protocol.
            same = [t for t in targets if api.protocol in t.upstream.native]
            opaque = passthrough_request(api, raw)
            if not same or opaque is None:
                raise
            log.info("passthrough only", extra={"fields": {"reason": exc.message}})
            req, targets = opaque, same
        user = end_user(req.user if req.user is not None else _raw_user(raw))
        who = Payer(principal.name, principal.team, user)
        # Counting a long prompt costs real CPU on the event loop: only a TPM limit or a budget
        # needs it up front (an upstream that reports no usage is estimated after the fact).
        budgeted = self.rt.state.covers(who)
        windowed = route.context_window is not None or any(t.context_window for t in targets)
        internal = scope.get(INTERNAL)
        mode = internal.mode if internal is not None else "realtime"
        policy = route.policy
        if mode != "realtime" and self.rt.config.raw.routing.deferred_policy == "cost":
            policy = "cost"  # batch and async work: the cheapest capacity first
        need_est = principal.tpm is not None or budgeted or windowed or policy == "cost"
        est = await self._estimate(req, len(body)) if need_est else 0
        out = req.max_tokens or 0
        targets = eligible(
            targets, route.context_window, needs(req), est, out, self._regions(scope, principal)
        )
        targets = order(
            targets,
            policy,
            self.rt.routing.stats,
            lambda t, hit: self.rt.expected_cost(t, hit, est, out or 256, mode),
            out or 256,
        )
        deadline = self._deadline(scope, route)
        hedge_s = self.rt.routing.hedge_after_s(route.hedge, targets[0]) if targets else None
        room, held = await self.rt.state.admit_rate(principal, est + out)
        holds: Any = None
        if budgeted:
            worst = self.rt.worst_case_usd(targets, est, req.max_tokens or DEFAULT_MAX_OUTPUT)
            try:
                holds = await self.rt.state.admit_budget(who, worst)
            except (BudgetExceeded, RateLimited):
                await self.rt.state.settle_rate(principal, held, 0)
                raise
        gate = self.rt.gates.get(req.model)
        slot = FREE
        if gate is not None:
            try:
                slot = await gate.enter(principal.priority, deadline.left())
            except RateLimited:
                await self.rt.state.settle_rate(principal, held, 0)
                await self.rt.state.settle_budget(holds, Decimal(0))
                raise
        ctx = self._context(scope, api.label, principal, req.model)
        rid = ctx.request_id
        ctx.user, ctx.tags, ctx.task = user, tags, task
        fwd: dict[str, str] = {}
        for k, v in scope["headers"]:
            if k in api.forward_headers:
                fwd[k.decode("latin-1")] = v.decode("latin-1")
        extra = room.headers()
        try:
            if req.stream:
                await chat.stream(
                    ctx,
                    api,
                    req,
                    raw,
                    fwd,
                    targets,
                    send,
                    receive,
                    extra,
                    deadline,
                    est + out,
                    hedge_s,
                )
            else:
                await chat.complete(
                    ctx, api, req, raw, fwd, targets, send, extra, deadline, est + out, hedge_s
                )
        except AllTargetsFailed as err:
            ctx.finish(err.status, err.flag)
            await self._error(send, api, err, [(b"x-tokenway-request-id", rid.encode()), *extra])
        finally:
            actual = ctx.usage.total_tokens if ctx.usage is not None else 0
            slot.release()
            await self.rt.state.settle_rate(principal, held, actual)
            await self.rt.state.settle_budget(holds, ctx.cost)

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = self._authenticate(scope)
        body = await read_body(scope, receive, self.max_body)
        raw = parse_json(body)
        check_model(self.rt.config.models, principal, raw.get("model"), "chat")
        if "max_tokens" not in raw:
            raw = {**raw, "max_tokens": 1}
        req = ANTHROPIC_MESSAGES.parse_request(raw)
        await respond(send, 200, _encode({"input_tokens": await self._estimate(req, len(body))}))

    async def _estimate(self, req: ChatRequest, size: int) -> int:
        """Prompt tokens; a big prompt is counted off the event loop so others keep flowing."""
        if size < 64 * 1024:
            return self.rt.estimate_prompt(req)
        return await asyncio.to_thread(self.rt.estimate_prompt, req)

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = self._authenticate(scope)
        body = await read_body(scope, receive, self.max_body)
        raw = parse_json(body)
        tags = parse_tags(header(scope, b"x-tokenway-tags"), raw.get("metadata"))
        task = task_of(header(scope, b"x-tokenway-task"), tags)
        route = self._route(principal, raw.get("model"), "embedding", task)
        regions = self._regions(scope, principal)
        targets = eligible(route.targets, None, frozenset(), 0, 0, regions)
        deadline = self._deadline(scope, route)
        req = parse_embeddings_request(raw)
        user = end_user(raw.get("user"))
        who = Payer(principal.name, principal.team, user)
        holds: Any = None
        if self.rt.state.covers(who):
            # An embedding bills its input only: the whole input at the dearest target.
            est = await asyncio.to_thread(_count_texts, req.input)
            holds = await self.rt.state.admit_budget(who, self.rt.worst_case_usd(targets, est, 0))
        ctx = self._context(scope, "openai.embeddings", principal, raw["model"])
        ctx.user, ctx.tags, ctx.task = user, tags, task
        try:
            await embeddings.handle(ctx, req, raw, targets, send, deadline)
        except AllTargetsFailed as err:
            ctx.finish(err.status, err.flag)
            await self._error(send, OPENAI_CHAT, err)
        finally:
            await self.rt.state.settle_budget(holds, ctx.cost)

    async def _admin_keys(
        self, scope: Scope, receive: Receive, send: Send, method: str, path: str
    ) -> None:
        principal = self._authenticate(scope)
        if not principal.admin:
            raise PermissionDenied("The admin endpoints need the admin key.")
        body = await read_body(scope, receive, self.max_body) if method != "GET" else b""
        status, doc = await admin_keys.handle(self.rt, method, path.rstrip("/"), body)
        await respond(send, status, _encode(doc))

    async def _admin(self, scope: Scope, send: Send, path: str) -> None:
        """Read-only operator views; the admin key only. Secrets are never shown."""
        principal = self._authenticate(scope)
        if not principal.admin:
            raise PermissionDenied("The admin endpoints need the admin key.")
        if path == "/admin/providers":
            doc: dict[str, Any] = {
                "data": [
                    {
                        "name": up.name,
                        "kind": up.kind,
                        "region": up.region,
                        "keys": len(up.keys),
                        "keys_resting": up.keys.resting(),
                    }
                    for up in self.rt.upstreams.values()
                ]
            }
        elif path == "/admin/targets":
            doc = {"data": self.rt.routing.report(self.rt.routes)}
        else:
            raise NotFound(f"Unknown endpoint: GET {path}")
        await respond(send, 200, _encode(doc))

    def _visible_models(self, principal: Principal) -> list[str]:
        names = list(self.rt.config.models)
        if principal.models is not None:
            names = [n for n in names if n in principal.models]
        return names

    async def _models(self, scope: Scope, send: Send) -> None:
        principal = self._authenticate(scope)
        names = self._visible_models(principal)
        created = int(self.rt.started_at)
        if header(scope, b"anthropic-version") is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
            data = [
                {"type": "model", "id": n, "display_name": n, "created_at": stamp} for n in names
            ]
            doc: dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        else:
            doc = {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": created, "owned_by": "tokenway"}
                    for n in names
                ],
            }
        await respond(send, 200, _encode(doc))

    async def _model(self, scope: Scope, send: Send, name: str) -> None:
        principal = self._authenticate(scope)
        if name not in self._visible_models(principal):
            raise NotFound(f"The model '{name}' does not exist or you do not have access to it.")
        created = int(self.rt.started_at)
        if header(scope, b"anthropic-version") is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
            doc: dict[str, Any] = {
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": stamp,
            }
        else:
            doc = {"id": name, "object": "model", "created": created, "owned_by": "tokenway"}
        await respond(send, 200, _encode(doc))
