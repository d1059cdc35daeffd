"""Small pure-ASGI helpers: read a bounded body, send a whole response."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tokenway.errors import BadRequest, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_CT = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client disconnected before the request body arrived."""


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (name in lower case), decoded as latin-1."""
    for k, v in scope["headers"]:
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes."""
    length = header(scope, b"content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise BadRequest("Invalid Content-Length header.") from None
        if n > limit:
            raise PayloadTooLarge(f"Request body is {n} bytes; the limit is {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, headers: Headers | None = None) -> None:
    """Send a complete response with a JSON content type unless `headers` says otherwise."""
    hdrs: Headers = [JSON_CT] if headers is None else headers
    hdrs = [*hdrs, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})
