"""A small HTTP/1.1 client for upstream calls: keep-alive pools, streamed bodies, nothing else.

The gateway asks one thing of its upstream client: POST a body, read the status and headers,
then the body whole or chunk by chunk, as cheaply as possible. A general client (cookies,
redirects, tracing, proxies, decompression) spends most of a proxied request's CPU on what a
gateway never uses, so this one speaks HTTP/1.1 on asyncio transports with the `httptools`
parser and keeps idle connections per origin.

Failures are plain built-in exceptions that `providers.transport.map_exception` translates:
`OSError` (refused, unreachable) and `ConnectionError` (reset, closed mid-answer) and
`TimeoutError` (no connection or no bytes in time).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 1 << 20  # pause reading an upstream when this much is buffered unread


class H1Response:
    """An upstream answer whose body arrives as the caller reads it."""

    def __init__(self, conn: _Conn, read_timeout: float | None) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False

    @property
    def content(self) -> H1Response:
        """The body reader (`iter_any`, `read`), the response itself."""
        return self

    # ---- fed by the connection ------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self._complete:
            self._exc = exc
        self._wake()

    # ---- read by the caller ---------------------------------------------------------------

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        try:
            if self._read_timeout is None:
                await self._waiter
            else:
                async with asyncio.timeout(self._read_timeout):
                    await self._waiter
        finally:
            self._waiter = None

    async def iter_any(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < _HIGH_WATER // 2:
                    self._conn.resume()
                yield chunk
                continue
            if self._exc is not None:
                raise self._exc
            if self._complete:
                return
            await self._wait()

    async def read(self, limit: int = -1) -> bytes:
        """The whole body (or at least `limit` bytes of it, when `limit` >= 0)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_any():
            parts.append(chunk)
            size += len(chunk)
            if 0 <= limit <= size:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def release(self) -> None:
        """Hand the connection back for reuse if the answer was read to its end, else close it."""
        if self._released:
            return
        self._released = True
        self._conn.done_with(self, reusable=self._complete and self._exc is None)


class _Conn(asyncio.Protocol):
    """One upstream connection; answers one request at a time."""

    def __init__(self, pool: H1Pool, key: tuple[str, str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.resp: H1Response | None = None
        self.closed = False
        self._paused = False
        self._keep_alive = True
        self._bytes_seen = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._bytes_seen = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._abort(ConnectionError(f"malformed HTTP from upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self.resp
        if resp is not None and not resp._complete:
            unframed = (
                resp.status
                and "content-length" not in resp.headers
                and "transfer-encoding" not in resp.headers
            )
            if unframed:  # a body delimited by the connection's end
                resp._finish()
            else:
                resp._fail(ConnectionResetError("upstream closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.resp is not None:
            self.resp.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.resp is not None:
            self.resp.status = self._parser.get_status_code()
            self._keep_alive = self._parser.should_keep_alive()
            self.resp._wake()

    def on_body(self, body: bytes) -> None:
        if self.resp is not None:
            self.resp._feed(body)

    def on_message_complete(self) -> None:
        if self.resp is not None:
            self.resp._finish()

    # flow control and lifecycle
    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _abort(self, exc: BaseException) -> None:
        if self.resp is not None:
            self.resp._fail(exc)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def start(self, request: bytes, resp: H1Response) -> None:
        self.resp = resp
        self._bytes_seen = False
        assert self.transport is not None
        self.transport.write(request)

    def done_with(self, resp: H1Response, *, reusable: bool) -> None:
        self.resp = None
        if reusable and self._keep_alive and not self.closed:
            self.resume()
            self._pool._put(self)
        else:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()


class H1Pool:
    """Keep-alive connections per origin. `post` sends and returns once headers arrived."""

    def __init__(self, *, max_idle_per_origin: int = 256) -> None:
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._max_idle = max_idle_per_origin
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        found = self._targets.get(url)
        if found is None:
            u = urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"unsupported upstream URL scheme: {u.scheme!r}")
            port = u.port or (443 if u.scheme == "https" else 80)
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            default = (u.scheme == "https" and port == 443) or (u.scheme == "http" and port == 80)
            host = u.hostname if default else f"{u.hostname}:{port}"
            head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1")
            found = ((u.scheme, u.hostname, port), head)
            if len(self._targets) < 10_000:
                self._targets[url] = found
        return found

    def _put(self, conn: _Conn) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < self._max_idle:
            idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    async def _connect(self, key: tuple[str, str, int], limit_s: float | None) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        ctx = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        async with asyncio.timeout(limit_s):
            _, proto = await loop.create_connection(
                lambda: _Conn(self, key),
                host,
                port,
                ssl=ctx,
                server_hostname=host if ctx else None,
            )
        return proto

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> H1Response:
        """Send a POST and wait for the answer's status and headers."""
        key, head = self._target(url)
        lines = [head]
        for k, v in headers.items():
            lines.append(f"{k}: {v}\r\n".encode("latin-1"))
        lines.append(f"content-length: {len(body)}\r\n\r\n".encode("latin-1"))
        lines.append(body)
        request = b"".join(lines)
        idle = self._idle.get(key)
        while True:
            reused = False
            conn: _Conn | None = None
            while idle:
                candidate = idle.pop()
                if not candidate.closed:
                    conn, reused = candidate, True
                    break
            if conn is None:
                conn = await self._connect(key, connect_timeout)
            resp = H1Response(conn, read_timeout)
            conn.start(request, resp)
            try:
                while not resp.status:
                    if resp._exc is not None:
                        raise resp._exc
                    if resp._complete:
                        raise ConnectionError("upstream answered without a status")
                    await resp._wait()
            except ConnectionError:
                resp.release()
                # An idle connection the upstream had already closed: nothing was processed,
                # so the request may go again on a fresh one.
                if reused and not conn._bytes_seen:
                    continue
                raise
            except BaseException:
                resp.release()
                raise
            return resp

    def close(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for c in conns:
                if c.transport is not None:
                    c.transport.close()
        self._idle.clear()
