"""Server-sent-event framing shared by the stream encoders and decoders.

`frame` builds one SSE frame from a JSON-able object; `SSEParser` cuts a byte stream into
`(event, data)` pairs, whatever the chunk boundaries. `merge_usage` folds successive usage reports
of one stream the way `UsageUpdate` defines it (later non-zero fields win).
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokenway.domain.types import Usage

DONE = b"data: [DONE]\n\n"

_encode = msgspec.json.encode


def frame(data: Any, event: str | None = None) -> bytes:
    """One SSE frame carrying `data` encoded as JSON, with an `event:` line when given."""
    body = _encode(data)
    if event is None:
        return b"data: " + body + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"


class SSEParser:
    """Incremental SSE parser: feed raw bytes, get complete `(event, data)` frames back.

    Only the `event` and `data` fields matter to LLM APIs; `id`, `retry` and comment lines are
    skipped. Multi-line `data` fields are joined with newlines as the SSE spec says.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        """Consume `chunk` and return every frame it completes."""
        self._buf += chunk
        out: list[tuple[str | None, str]] = []
        while True:
            # Lines may end in \n, \r\n or \r; normalise lazily on the buffered text.
            nl = self._buf.find(b"\n")
            cr = self._buf.find(b"\r")
            if nl < 0 and cr < 0:
                break
            if cr >= 0 and (nl < 0 or cr < nl):
                if cr + 1 == len(self._buf):
                    break  # a \r at the end may be half of \r\n: wait for more bytes
                end, skip = cr, 2 if self._buf[cr + 1 : cr + 2] == b"\n" else 1
            else:
                end, skip = nl, 1
            line = self._buf[:end].decode("utf-8", errors="replace")
            self._buf = self._buf[end + skip :]
            self._line(line, out)
        return out

    def close(self) -> list[tuple[str | None, str]]:
        """Flush a final frame that was not terminated by a blank line."""
        out: list[tuple[str | None, str]] = []
        if self._buf:
            self._line(self._buf.decode("utf-8", errors="replace"), out)
            self._buf = b""
        self._line("", out)
        return out

    def _line(self, line: str, out: list[tuple[str | None, str]]) -> None:
        if not line:
            if self._data:
                out.append((self._event, "\n".join(self._data)))
            self._event, self._data = None, []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


def merge_usage(old: Usage | None, new: Usage) -> Usage:
    """Fold `new` into `old`: each non-zero field of `new` replaces the one in `old`.

    `cache_explicit` is sticky: an update that does not repeat the cache type keeps it."""
    if old is None:
        return new
    return Usage(
        input_tokens=new.input_tokens or old.input_tokens,
        cache_read_tokens=new.cache_read_tokens or old.cache_read_tokens,
        cache_write_tokens=new.cache_write_tokens or old.cache_write_tokens,
        cache_write_1h_tokens=new.cache_write_1h_tokens or old.cache_write_1h_tokens,
        output_tokens=new.output_tokens or old.output_tokens,
        reasoning_tokens=new.reasoning_tokens or old.reasoning_tokens,
        service_tier=new.service_tier or old.service_tier,
        source=new.source,
        cache_explicit=new.cache_explicit or old.cache_explicit,
    )
