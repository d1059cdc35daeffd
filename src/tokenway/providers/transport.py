"""HTTP to upstreams: SSE framing, error bodies, and the one place where foreign
exceptions become tokenway errors (see `tokenway.errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from tokenway.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatus,
    UpstreamStreamCut,
    UpstreamTimeout,
)
from tokenway.providers.h1 import H1Response

_decode = msgspec.json.decode


def map_exception(exc: BaseException, *, streaming: bool = False) -> UpstreamError:
    """Translate a transport or parsing exception into the tokenway error tree."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream timed out")
    if streaming and isinstance(exc, ConnectionError):
        return UpstreamStreamCut(f"upstream stream broke: {type(exc).__name__}")
    if isinstance(exc, ConnectionError | OSError):
        return UpstreamConnectError(f"upstream connection failed: {type(exc).__name__}")
    if isinstance(exc, msgspec.DecodeError | ValueError):
        return UpstreamConnectError("upstream sent a malformed body")
    return UpstreamConnectError(f"upstream failed: {type(exc).__name__}")


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from a `retry-after` (or `retry-after-ms`) header, if any."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            return None
    return None


def error_message(body: bytes) -> tuple[str, str | None]:
    """The message and type of a provider's error body, whatever its shape."""
    try:
        doc = _decode(body)
    except (msgspec.DecodeError, RecursionError):
        text = body[:200].decode("utf-8", "replace").strip()
        return (text or "upstream error"), None
    if isinstance(doc, list) and doc:
        doc = doc[0]
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
            etype = err.get("type") or err.get("status")
            return (str(msg) if msg else "upstream error"), (str(etype) if etype else None)
        if isinstance(err, str):
            return err, None
        if isinstance(doc.get("message"), str):
            return str(doc["message"]), None
    return "upstream error", None


async def raise_for_status(resp: H1Response) -> None:
    """Raise `UpstreamStatus` for a non-2xx answer, after reading its (bounded) body."""
    if resp.status < 400:
        return
    try:
        body = await resp.content.read(64 * 1024)
    except (TimeoutError, OSError):
        body = b""
    message, etype = error_message(body)
    if resp.status == 429:
        from tokenway.translate.gemini import retry_delay_s

        retry = parse_retry_after(resp.headers)
        if retry is None:
            try:
                retry = retry_delay_s(_decode(body))
            except (msgspec.DecodeError, RecursionError):
                retry = None
    else:
        retry = parse_retry_after(resp.headers)
    raise UpstreamStatus(resp.status, message, retry_after_s=retry, error_type=etype)


class SseFrame(msgspec.Struct):
    event: str | None
    data: bytes
    raw: bytes


async def iter_sse(resp: H1Response) -> AsyncIterator[SseFrame]:
    """Yield SSE frames as they arrive; `raw` is the frame's bytes including its terminator."""
    buf = b""
    async for chunk in resp.content.iter_any():
        buf = buf + chunk if buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        # Scan by offset and cut the buffer once per chunk: slicing per frame is quadratic
        # when a busy upstream delivers many frames in one read.
        pos = 0
        while True:
            end = buf.find(b"\n\n", pos)
            if end < 0:
                break
            frame = _parse_frame(buf[pos : end + 2])
            pos = end + 2
            if frame is not None:
                yield frame
        buf = buf[pos:]
    if buf.strip():
        frame = _parse_frame(buf + b"\n\n")
        if frame is not None:
            yield frame


def _parse_frame(raw: bytes) -> SseFrame | None:
    event: str | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
    if not data and event is None:
        return None
    return SseFrame(event=event, data=b"\n".join(data), raw=raw)
