"""OpenAI's Files API, for batch input and output files.

    POST   /v1/files                 multipart upload: `file`, `purpose=batch`, optional
                                     `expires_after[anchor]` and `expires_after[seconds]`
    GET    /v1/files                 `?purpose=&limit=&order=asc|desc&after=`
    GET    /v1/files/{id}            the file object
    GET    /v1/files/{id}/content    the bytes
    DELETE /v1/files/{id}

Files belong to the key that uploaded them (output files to the key that made the batch);
another key gets 404.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import msgspec

from tokenway.batch.service import BatchService
from tokenway.domain.types import Principal
from tokenway.errors import BadRequest, NotFound
from tokenway.gateway import multipart
from tokenway.gateway.asgi import Receive, Scope, Send, header, read_body, respond

__all__ = ["handle", "no_nul", "query"]

_encode = msgspec.json.encode
# Room for the multipart envelope around a file of the largest size allowed.
_ENVELOPE = 1024 * 1024


def no_nul(value: str, param: str) -> str:
    """`value`, refused if it holds U+0000: PostgreSQL text cannot, so the store would fail the
    request outright (a 500) where SQLite answers, and no id tokenway mints has one."""
    if "\x00" in value:
        raise BadRequest(f"{param}: must not contain NUL (U+0000) characters.", param=param)
    return value


def query(scope: Scope) -> dict[str, str]:
    """The query string's parameters (the first value of each)."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: no_nul(v[0], k) for k, v in parse_qs(raw, keep_blank_values=True).items()}


async def handle(
    svc: BatchService, principal: Principal, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve one request under `/v1/files`."""
    method: str = scope["method"]
    parts = scope["path"].rstrip("/").split("/")[3:]  # after "", "v1", "files"
    if parts:  # the id every store lookup below takes
        no_nul(parts[0], "file_id")
    if not parts:
        if method == "POST":
            return await _upload(svc, principal, scope, receive, send)
        if method == "GET":
            q = query(scope)
            doc = await svc.files(
                principal,
                limit=q.get("limit"),
                after=q.get("after"),
                order=q.get("order"),
                purpose=q.get("purpose"),
            )
            return await respond(send, 200, _encode(doc))
    elif len(parts) == 1:
        if method == "GET":
            return await respond(send, 200, _encode(await svc.file(principal, parts[0])))
        if method == "DELETE":
            return await respond(send, 200, _encode(await svc.delete(principal, parts[0])))
    elif len(parts) == 2 and parts[1] == "content" and method == "GET":
        data = await svc.content(principal, parts[0])
        return await respond(send, 200, data, [(b"content-type", b"application/octet-stream")])
    raise NotFound(f"Unknown endpoint: {method} {scope['path']}")


async def _upload(
    svc: BatchService, principal: Principal, scope: Scope, receive: Receive, send: Send
) -> None:
    boundary = multipart.boundary_of(header(scope, b"content-type"))
    body = await read_body(scope, receive, svc.cfg.max_file_bytes + _ENVELOPE)
    fields: dict[str, str] = {}
    file: multipart.Part | None = None
    for part in multipart.parse(body, boundary):
        if part.name == "file":
            file = part
        else:
            try:
                fields[part.name] = part.data.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"'{part.name}' must be UTF-8 text.", param=part.name) from None
    expires = None
    if "expires_after[anchor]" in fields or "expires_after[seconds]" in fields:
        expires = (fields.get("expires_after[seconds]"), fields.get("expires_after[anchor]"))
    filename = file.filename if file is not None else None
    if filename is not None and "\x00" in filename:
        raise BadRequest("The file's name must not contain NUL (U+0000) characters.", param="file")
    doc = await svc.upload(
        principal,
        fields.get("purpose"),
        filename,
        file.data if file is not None else None,
        expires,
    )
    await respond(send, 200, _encode(doc))
