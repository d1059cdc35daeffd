"""A real gateway and real simulated providers on loopback sockets, in a background thread.

Tests talk to it with the official SDKs over HTTP, exactly as an application would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn
import uvloop

from tokenway.config.load import Config, parse_config
from tokenway.gateway.app import Gateway
from tokenway.runtime import Runtime

T = TypeVar("T")


class Stack:
    """Gateway + sims from a config document; `url` is the gateway's base URL."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.config: Config = parse_config(doc, env={})
        self.rt = Runtime(self.config)
        # the event loop `tokenway serve` runs on, so that tests see what production sees
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Future[None] | None = None
        self.url = ""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the stack's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Stack:
        self._thread.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        cfg = uvicorn.Config(
            Gateway(self.rt),
            lifespan="on",
            access_log=False,
            log_level="warning",
            http="httptools",
            loop="none",
        )
        self._server = uvicorn.Server(cfg)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

        async def serve() -> None:
            assert self._server is not None
            await self._server.serve(sockets=[sock])

        self._task = asyncio.run_coroutine_threadsafe(serve(), self.loop)  # type: ignore[assignment]

        async def wait_started() -> None:
            while not (self._server and self._server.started):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        self.run(wait_started())
        self.url = f"http://127.0.0.1:{port}"
        return self

    @property
    def sims(self) -> dict[str, Any]:
        return self.rt.sims

    def flush(self) -> None:
        self.run(self.rt.ledger.flush())

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            self._task.result(30)  # type: ignore[union-attr]
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
