"""Async tasks: a normal request body, answered later.

    POST /v1/async/chat/completions  a chat completions body   -> 202, the task
    POST /v1/async/embeddings        an embeddings body         -> 202, the task
    GET  /v1/async/tasks/{id}        the task; once ended, its `result` (the HTTP status and
                                     body the endpoint answered) and `usage`
    POST /v1/async/tasks/{id}/cancel cancel a queued task (409 once it runs or has ended)
    GET  /v1/async/tasks             the key's tasks, newest first, `?limit=&after=&status=`
                                     (the list shape and pages of `GET /v1/batches`)

Headers (`x-tokenway-deadline-s`, `x-tokenway-webhook`, `idempotency-key`, the routing
headers) are described in batch/tasks.py. A submission that replays an idempotency key gets
the task made the first time: 200 rather than 202, with `idempotent-replayed: true`. A task
belongs to the key that submitted it; another key gets 404 and never lists it. Errors are
OpenAI's shape. The work is done by the replicas' batch runners, at low priority, with
ledger rows in mode `async`.
"""

from __future__ import annotations

import msgspec

from tokenway.batch.tasks import ENDPOINTS, HEADERS, TaskService
from tokenway.domain.types import Principal
from tokenway.errors import NotFound
from tokenway.gateway.asgi import JSON_CT, Receive, Scope, Send, header, read_body, respond
from tokenway.gateway.files import no_nul, query

__all__ = ["PREFIX", "handle"]

PREFIX = "/v1/async/"
_LIST = PREFIX + "tasks"
_TASKS = _LIST + "/"
_REPLAYED = (b"idempotent-replayed", b"true")
_encode = msgspec.json.encode


async def handle(
    svc: TaskService,
    principal: Principal,
    scope: Scope,
    receive: Receive,
    send: Send,
    max_body: int,
) -> None:
    """Serve one request under `/v1/async/`."""
    method: str = scope["method"]
    path: str = scope["path"].rstrip("/")
    endpoint = "/v1/" + path[len(PREFIX) :]
    if method == "POST" and endpoint in ENDPOINTS:
        body = await read_body(scope, receive, max_body)
        headers = {
            name: value
            for name in HEADERS
            if (value := header(scope, name.encode("latin-1"))) is not None
        }
        task, replayed = await svc.create(principal, endpoint, body, headers)
        location = (b"location", (_TASKS + task["id"]).encode())
        if replayed:
            return await respond(send, 200, _encode(task), [JSON_CT, location, _REPLAYED])
        return await respond(send, 202, _encode(task), [JSON_CT, location])
    if path == _LIST and method == "GET":
        q = query(scope)  # refuses NUL in any parameter, as PostgreSQL text cannot hold it
        doc = await svc.tasks(
            principal, limit=q.get("limit"), after=q.get("after"), status=q.get("status")
        )
        return await respond(send, 200, _encode(doc))
    parts = path[len(_TASKS) :].split("/") if path.startswith(_TASKS) else []
    if parts:  # the id the store looks up (PostgreSQL text cannot hold NUL)
        no_nul(parts[0], "task_id")
    if len(parts) == 1 and parts[0] and method == "GET":
        return await respond(send, 200, _encode(await svc.task(principal, parts[0])))
    if len(parts) == 2 and parts[1] == "cancel" and method == "POST":
        return await respond(send, 200, _encode(await svc.cancel(principal, parts[0])))
    raise NotFound(f"Unknown endpoint: {method} {scope['path']}")
