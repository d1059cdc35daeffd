"""The OpenAI Responses API.

    POST   /v1/responses                       create (stream and not)
    GET    /v1/responses/{id}                  a stored response
    DELETE /v1/responses/{id}                  delete it
    GET    /v1/responses/{id}/input_items      the items it was generated from, paginated

A Responses request is one more client API of the chat path: its body is parsed to the
canonical request (the stored conversation of `previous_response_id` first), then routed,
limited, executed with failover and hedging, and accounted exactly as a chat completion is
(ledger `api` = `openai.responses`). Each target gets it in the protocol it speaks:

- an OpenAI-kind upstream with `responses: true` (native) gets the client's own Responses body,
  relayed as the chat passthrough relays chat (`translate/responses_upstream.py`), so fields
  tokenway does not model still reach it; its usage (cached and reasoning subsets included)
  is read from its Response or its `response.completed` event;
- any other upstream gets the request translated (chat completions for OpenAI-kind ones), and
  its answer is translated back into Response objects and events.

tokenway, not the upstream, is the Responses server the client talks to, so the conversation
state is tokenway's whatever target serves a turn: a conversation may move between native and
translated targets (failover, routing) from one turn to the next, and `DELETE` must really
delete it. Hence, for a native target:

- `previous_response_id` names a response in tokenway's store, which the upstream has never
  seen: tokenway expands it, and the upstream gets no `previous_response_id` but the whole
  conversation as `input` (the stored input and output items, then the client's input;
  `responses_upstream.replay` says what an upstream can take of them). A request with no
  `previous_response_id` goes up with its `input` as it came;
- the upstream is asked to store nothing (`store: false`): what the client asked to keep,
  tokenway keeps, and a copy at the provider would outlive the client's `DELETE`;
- the Response the client gets carries tokenway's `id` and the client's own `store` and
  `previous_response_id`; the rest (output items and their ids, usage, the upstream's model
  name) is the upstream's, as in the chat passthrough. A stream's events are relayed as they
  come, with those three fields restamped in the events that carry the whole Response.

Reasoning carries across turns as stateless use of the Responses API allows: a reasoning item
goes back to a native upstream only with the upstream's own `encrypted_content` (a client that
wants it asks `include: ["reasoning.encrypted_content"]`, as it would with `store: false`
against OpenAI directly); without it the item is dropped, as chat upstreams drop it.

With `store` (the default) the Response object the client gets is saved, with its input items,
before its last byte is sent, so a follow-up naming it can never arrive first. Its input items
are the whole conversation it was generated from (the replayed items first), which is also what
`input_items` lists. Stored responses belong to the key that created them: for any other key
they do not exist (404). A store that cannot be reached makes reads a 503; a response it could
not keep is still delivered (and logged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

import msgspec

from tokenway.domain.types import ChatRequest, ChatResponse
from tokenway.errors import BadRequest, NotFound, TokenwayError
from tokenway.gateway.apis import ClientApi, openai_error
from tokenway.gateway.asgi import Message, Receive, Scope, Send, read_body, respond
from tokenway.telemetry.log import log
from tokenway.translate import responses_request as rr
from tokenway.translate.responses_response import Shell, encode_response
from tokenway.translate.responses_stream import StreamEncoder
from tokenway.translate.responses_upstream import Relay, replay

if TYPE_CHECKING:
    from tokenway.gateway.app import Gateway
    from tokenway.store.responses import StoredResponse

T = TypeVar("T")
JSON = dict[str, Any]
LABEL = "openai.responses"

_decode = msgspec.json.decode
_encode = msgspec.json.encode


class StoreDown(TokenwayError):
    """The store holding responses cannot be reached: 503, worth retrying."""

    status = 503
    error_type = "api_error"
    flag = "STORE"
    retry_after_s = 1.0


async def _store(fn: Callable[..., T], *args: Any) -> T:
    # imported here: the store pulls in asyncpg, which a gateway that never serves
    # /v1/responses should not pay for at start-up
    from tokenway.store.sql import StoreUnavailable

    try:
        return await asyncio.to_thread(fn, *args)
    except StoreUnavailable:
        raise StoreDown("The response store is unavailable; retry shortly.") from None


def _may_exist(rid: str) -> bool:
    """Whether `rid` could name a stored response at all. PostgreSQL text cannot hold U+0000
    (a lookup fails outright), and no id tokenway mints has one: such an id is simply not
    found, on every store."""
    return "\x00" not in rid


async def handle(
    gw: Gateway, scope: Scope, receive: Receive, send: Send, method: str, path: str
) -> None:
    """Dispatch a `/v1/responses*` request."""
    rest = path[len("/v1/responses") :].strip("/")
    if method == "POST" and not rest:
        return await create(gw, scope, receive, send)
    rid, _, sub = rest.partition("/")
    if rid and method == "GET" and not sub:
        return await retrieve(gw, scope, send, rid)
    if rid and method == "DELETE" and not sub:
        return await delete(gw, scope, send, rid)
    if rid and method == "GET" and sub == "input_items":
        return await input_items(gw, scope, send, rid)
    if rid and method == "POST" and sub == "cancel":
        raise BadRequest("Only background responses can be cancelled; tokenway runs none.")
    raise NotFound(f"Unknown endpoint: {method} {path}")


class _Session:
    """One create request: its Response shell, what to store, and the client's `send`, wrapped
    so that the final Response object (translated, or relayed from a native upstream) is
    stored before the last byte leaves."""

    def __init__(
        self, gw: Gateway, key: str, shell: Shell, items: list[JSON], store: bool, send: Send
    ) -> None:
        self.gw = gw
        self.key = key
        self.shell = shell
        self.items = items
        self.store = store
        self._send = send
        self.status = 0
        self.encoder: StreamEncoder | None = None
        self.relay = Relay(shell)

    def encode_response(self, resp: ChatResponse, model: str) -> JSON:
        return encode_response(self.shell, resp)

    def stream_encoder(self, model: str, **_: Any) -> StreamEncoder:
        self.encoder = StreamEncoder(self.shell)
        return self.encoder

    async def send(self, msg: Message) -> None:
        if msg["type"] == "http.response.start":
            self.status = msg["status"]
        elif (
            self.store
            and self.status == 200
            and msg["type"] == "http.response.body"
            and not msg.get("more_body", False)
        ):
            final = self._final(msg["body"])
            if isinstance(final, dict) and final.get("id") == self.shell.id:
                await self._save(final)
        await self._send(msg)

    def _final(self, body: bytes) -> Any:
        """The Response object the answer ending with `body` carried."""
        if self.encoder is not None:  # a translated stream
            return self.encoder.final
        if self.relay.final is not None:  # a native stream
            return self.relay.final
        native = self.relay.final_of(body)
        if native is not None:
            return native
        try:
            return _decode(body)
        except msgspec.DecodeError:
            return None

    async def _save(self, final: JSON) -> None:
        try:
            await asyncio.to_thread(self.gw.rt.responses.save, self.key, final, self.items)
        except Exception as exc:  # the answer is already paid for: deliver it regardless
            log.warning(
                "response not stored",
                extra={"fields": {"response_id": self.shell.id, "error": type(exc).__name__}},
            )


async def create(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """`POST /v1/responses`: parse, then run the chat path, which relays the body to native
    targets and translates it for the others."""
    principal = gw._authenticate(scope)
    body = await read_body(scope, receive, gw.max_body)
    from tokenway.gateway.app import BIG_BODY, parse_json  # the app imports this module first

    def parse_body() -> tuple[JSON, rr.ResponsesRequest]:
        raw = parse_json(body)
        return raw, rr.parse_request(raw)

    raw, parsed = await asyncio.to_thread(parse_body) if len(body) >= BIG_BODY else parse_body()
    history: list[JSON] = []
    previous = parsed.previous_response_id
    if previous is not None:
        prev = None
        if _may_exist(previous):
            prev = await _store(gw.rt.responses.get, principal.name, previous)
        if prev is None:
            raise BadRequest(
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        history = [*prev.input_items, *prev.response.get("output", [])]
    req = rr.to_chat(parsed, history)
    shell = Shell(
        id=rr.new_id("resp"),
        created_at=int(gw.rt.now()),
        model=parsed.chat.model,
        echo=parsed.echo,
    )
    session = _Session(gw, principal.name, shell, [*history, *parsed.items], parsed.store, send)

    def parse(_raw: JSON) -> ChatRequest:
        return req

    api = ClientApi(
        label=LABEL,
        protocol="responses",
        parse_request=parse,
        encode_response=session.encode_response,
        stream_encoder=session.stream_encoder,
        error_body=openai_error,
        forward_headers=frozenset(),
        relay=session.relay,
    )
    await gw._chat(api, scope, receive, session.send, body=body, raw=_native_body(raw, history))


def _native_body(raw: JSON, history: list[JSON]) -> JSON:
    """The body a native upstream gets (but for `model` and `store`, which its adapter sets):
    the client's, with a `previous_response_id` expanded into the conversation it names."""
    if not history:
        return raw
    body = {k: v for k, v in raw.items() if k != "previous_response_id"}
    own = raw["input"]
    body["input"] = [
        *replay(history),
        *([{"role": "user", "content": own}] if isinstance(own, str) else own),
    ]
    return body


async def _stored(gw: Gateway, scope: Scope, rid: str) -> StoredResponse:
    principal = gw._authenticate(scope)
    found = await _store(gw.rt.responses.get, principal.name, rid) if _may_exist(rid) else None
    if found is None:
        raise NotFound(f"Response with id '{rid}' not found.", param="response_id")
    return found


def _query(scope: Scope) -> dict[str, str]:
    qs = scope.get("query_string", b"").decode("latin-1")
    return {k.removesuffix("[]"): v[-1] for k, v in parse_qs(qs).items()}


async def retrieve(gw: Gateway, scope: Scope, send: Send, rid: str) -> None:
    """`GET /v1/responses/{id}`."""
    if _query(scope).get("stream", "false").lower() == "true":
        raise BadRequest(
            "stream=true replays background responses only; tokenway runs none.", param="stream"
        )
    found = await _stored(gw, scope, rid)
    await respond(send, 200, _encode(found.response))


async def delete(gw: Gateway, scope: Scope, send: Send, rid: str) -> None:
    """`DELETE /v1/responses/{id}`."""
    principal = gw._authenticate(scope)
    if not _may_exist(rid) or not await _store(gw.rt.responses.delete, principal.name, rid):
        raise NotFound(f"Response with id '{rid}' not found.", param="response_id")
    await respond(send, 200, _encode({"id": rid, "object": "response", "deleted": True}))


def _limit(query: dict[str, str]) -> int:
    raw = query.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise BadRequest(f"limit: must be a whole number from 1 to 100, got {raw!r}", param="limit")
    return limit


async def input_items(gw: Gateway, scope: Scope, send: Send, rid: str) -> None:
    """`GET /v1/responses/{id}/input_items?limit=&order=&after=`: newest first by default."""
    query = _query(scope)
    limit = _limit(query)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest(f"order: must be 'asc' or 'desc', got {order!r}", param="order")
    found = await _stored(gw, scope, rid)
    items: list[JSON] = found.input_items
    if order == "desc":
        items = items[::-1]
    start = 0
    after = query.get("after")
    if after:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise BadRequest(f"after: no input item '{after}' in this response", param="after")
        start = ids.index(after) + 1
    page = items[start : start + limit]
    doc = {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": start + limit < len(items),
    }
    await respond(send, 200, _encode(doc))
