"""`multipart/form-data` bodies (RFC 7578), as the OpenAI SDK uploads files, parsed in memory.

A body is parts between `--BOUNDARY` delimiter lines, closed by `--BOUNDARY--`; each part has
headers (`Content-Disposition: form-data; name="..."[; filename="..."]`, maybe `Content-Type`),
a blank line, and its bytes. Quoted parameter values may escape `"` and `\\` with a backslash,
and HTML5 clients write `"` as `%22` (both are undone). Anything malformed is a `BadRequest`, and
so are part headers of more than `MAX_HEADER_BYTES` in all.
"""

from __future__ import annotations

from typing import NamedTuple

from tokenway.errors import BadRequest

__all__ = ["MAX_HEADER_BYTES", "Part", "boundary_of", "parse"]

# Part headers are read a character at a time on the event loop (about 80 ns each): unbounded,
# one upload with a 100 MB Content-Disposition would stall every request for seconds. A form
# as the SDKs send it has a few hundred bytes of them.
MAX_HEADER_BYTES = 64 * 1024


class Part(NamedTuple):
    """One form field: its name, its filename if it is a file, its content type and bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def _params(value: str) -> tuple[str, dict[str, str]]:
    """`token; a=b; c="d; e"` as ("token", {"a": "b", "c": "d; e"}), names in lower case."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise BadRequest("multipart: unterminated quoted string in a part header.")
    items.append("".join(current))
    params: dict[str, str] = {}
    for item in items[1:]:
        key, sep, val = item.strip().partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = _unquote(val[1:-1])
        params[key.strip().lower()] = val
    return items[0].strip().lower(), params


def _unquote(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for ch in chars:
        out.append(next(chars, "") if ch == "\\" else ch)
    return "".join(out).replace("%22", '"')


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a `multipart/form-data` content type."""
    if content_type is None:
        raise BadRequest("Content-Type must be multipart/form-data.")
    kind, params = _params(content_type)
    boundary = params.get("boundary", "")
    if kind != "multipart/form-data":
        raise BadRequest("Content-Type must be multipart/form-data.")
    if not 1 <= len(boundary) <= 200:
        raise BadRequest("multipart: the Content-Type has no valid boundary.")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError:
        raise BadRequest("multipart: the boundary must be ASCII.") from None


def parse(body: bytes, boundary: bytes) -> list[Part]:
    """The parts of a multipart body."""
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise BadRequest("multipart: the body has no part.")
        pos = start + 2 + len(delimiter)
    parts: list[Part] = []
    header_bytes = 0
    while True:
        if body.startswith(b"--", pos):
            return parts
        if not body.startswith(b"\r\n", pos):
            raise BadRequest("multipart: malformed delimiter line.")
        pos += 2
        if body.startswith(b"\r\n", pos):  # a part with no headers at all
            headers: dict[str, str] = {}
            data_start = pos + 2
        else:
            head_end = body.find(b"\r\n\r\n", pos)
            if head_end < 0:
                raise BadRequest("multipart: a part's headers never end.")
            header_bytes += head_end - pos
            if header_bytes > MAX_HEADER_BYTES:
                raise BadRequest(
                    f"multipart: the parts' headers exceed {MAX_HEADER_BYTES} bytes in all."
                )
            headers = _headers(body[pos:head_end])
            data_start = head_end + 4
        data_end = body.find(b"\r\n" + delimiter, data_start)
        if data_end < 0:
            raise BadRequest("multipart: the body ends before its closing delimiter.")
        disposition = headers.get("content-disposition")
        if disposition is None:
            raise BadRequest("multipart: a part has no Content-Disposition.")
        kind, params = _params(disposition)
        if kind != "form-data" or "name" not in params:
            raise BadRequest("multipart: a part is not form-data with a name.")
        parts.append(
            Part(
                params["name"],
                params.get("filename"),
                headers.get("content-type"),
                body[data_start:data_end],
            )
        )
        pos = data_end + 2 + len(delimiter)


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadRequest("multipart: malformed part header.")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("utf-8", "replace")
    return headers
