"""The upstream HTTP/1.1 client against real servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tokenway.providers.h1 import H1Pool


@pytest.fixture()
async def server() -> AsyncIterator[tuple[str, list[object]]]:
    peers: list[object] = []

    async def fixed(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response({"echo": (await request.read()).decode()})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(5):
            await resp.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (5 << 20))

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/fixed", fixed)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/big", big)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", peers
    await runner.cleanup()


async def post(pool: H1Pool, url: str, body: bytes = b"{}", read: float = 5) -> tuple[int, bytes]:
    resp = await pool.post(url, body, {}, connect_timeout=2, read_timeout=read)
    try:
        return resp.status, await resp.read()
    finally:
        resp.release()


async def test_keep_alive_reuses_one_connection(server: tuple[str, list[object]]) -> None:
    url, peers = server
    pool = H1Pool()
    try:
        for i in range(5):
            status, body = await post(pool, url + "/fixed", f"n{i}".encode())
            assert status == 200 and f"n{i}".encode() in body
        assert len(set(map(str, peers))) == 1
    finally:
        pool.close()


async def test_chunked_body_streams_incrementally(server: tuple[str, list[object]]) -> None:
    url, _ = server
    pool = H1Pool()
    try:
        resp = await pool.post(url + "/chunked", b"", {}, connect_timeout=2, read_timeout=5)
        pieces = [c async for c in resp.content.iter_any()]
        resp.release()
        assert b"".join(pieces) == b"".join(f"data: {i}\n\n".encode() for i in range(5))
        assert len(pieces) >= 3  # arrived as written, not all at the end
    finally:
        pool.close()


async def test_large_body_with_flow_control(server: tuple[str, list[object]]) -> None:
    url, _ = server
    pool = H1Pool()
    try:
        status, body = await post(pool, url + "/big")
        assert status == 200 and len(body) == 5 << 20
        status, _ = await post(pool, url + "/fixed")  # the connection is still usable
        assert status == 200
    finally:
        pool.close()


async def test_read_timeout_and_refused_connection(server: tuple[str, list[object]]) -> None:
    url, _ = server
    pool = H1Pool()
    try:
        with pytest.raises(TimeoutError):
            await post(pool, url + "/slow", read=0.2)
        with pytest.raises(OSError):
            await post(pool, "http://127.0.0.1:9/nothing")
    finally:
        pool.close()


async def test_idle_connection_closed_by_server_is_replaced() -> None:
    served = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        served += 1
        # close-delimited body, then hang up: the next request needs a new connection
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n\r\nhello")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    pool = H1Pool()
    try:
        for _ in range(3):
            status, body = await post(pool, f"http://127.0.0.1:{port}/x")
            assert (status, body) == (200, b"hello")
        assert served == 3
    finally:
        pool.close()
        srv.close()
        await srv.wait_closed()
