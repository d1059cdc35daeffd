"""The upstream sender: credentials never leave with an error, redirects are not followed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tokenway.config.schema import ProviderConfig
from tokenway.errors import UpstreamConnectError, UpstreamStatus
from tokenway.providers.adapters import Prepared
from tokenway.providers.h1 import H1Pool
from tokenway.providers.upstream import Upstream

SECRET = "sk-provider-0123456789abcdef"


@pytest.fixture()
async def server() -> AsyncIterator[str]:
    async def echo_key(request: web.Request) -> web.Response:
        key = request.headers.get("authorization", "")
        return web.json_response({"error": {"message": f"bad request made with {key}"}}, status=400)

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": f"key {SECRET} revoked"}}, status=401)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:9/steal")

    app = web.Application()
    app.router.add_post("/v1/echo", echo_key)
    app.router.add_post("/v1/refuse", refuse)
    app.router.add_post("/v1/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


async def send(base: str, path: str) -> None:
    cfg = ProviderConfig(name="p", kind="openai", base_url=base, api_key=SECRET)
    pool = H1Pool()
    try:
        up = Upstream(cfg, base, pool)
        await up.send(Prepared(f"{base}/{path}", {}, b"{}"))
    finally:
        pool.close()


async def test_echoed_key_is_scrubbed(server: str) -> None:
    with pytest.raises(UpstreamStatus) as e:
        await send(server, "echo")
    assert SECRET not in e.value.message and "[redacted]" in e.value.message
    assert e.value.status == 400


async def test_refused_credentials_get_a_generic_message(server: str) -> None:
    with pytest.raises(UpstreamStatus) as e:
        await send(server, "refuse")
    assert SECRET not in e.value.message
    assert e.value.status == 502 and e.value.flag == "UAUTH"


async def test_redirects_are_not_followed(server: str) -> None:
    with pytest.raises(UpstreamConnectError, match="redirect"):
        await send(server, "redirect")
