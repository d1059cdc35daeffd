"""`SimServer`: one simulated provider on a real socket (aiohttp.web).

The server owns what every protocol shares: recording requests, authentication, faults, rate
limits, the prefix cache, timing and SSE writing. A `Wire` (one per protocol, in `wire_*.py`)
owns the routes and the exact request and response shapes.

A request goes: record -> key check -> protocol precheck -> handler, which parses the body into
an `Ask`, plans the reply, then calls `admit` (faults in order, then the sliding-window limits)
before answering whole or as a stream paced by `ttft_ms`, `tokens_per_s` and `jitter`.
"""

from __future__ import annotations

import asyncio
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import msgspec
from aiohttp import web

from tokenway.config.schema import SimScenario
from tokenway.sim import text as tx
from tokenway.sim.cache import PrefixCache
from tokenway.sim.engine import Ask, Plan, SimBadRequest, plan_reply
from tokenway.sim.ratelimit import Decision, LimitSnapshot, SlidingWindow

Kind = Literal["openai", "anthropic", "gemini"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_BODY = web.RequestKey("sim_body", object)
_RAW = web.RequestKey("sim_raw", bytes)
_STREAM = web.RequestKey("sim_stream", web.StreamResponse)


@dataclass
class ReceivedRequest:
    """One request as the simulated provider saw it (header names lower-case)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class SimError(Exception):
    """An error answer; the wire renders it in its provider's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        etype: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.etype = etype
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


class _Drop(Exception):
    """Close the connection without answering."""


class _Cut(Exception):
    """The stream was aborted on purpose after some chunks."""


@dataclass
class Gate:
    """An admitted request: headers to send, and the chunk count after which to cut (if any)."""

    headers: dict[str, str]
    cut_after: int | None = None


class Wire(ABC):
    """One provider's wire protocol on top of a `SimServer`."""

    def __init__(self, server: SimServer) -> None:
        self.server = server

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The endpoints this protocol serves."""

    @abstractmethod
    def presented_key(self, request: web.Request) -> str | None:
        """The API key the request carries, where this protocol carries it."""

    def precheck(self, request: web.Request) -> None:
        """Protocol checks before the handler (e.g. required headers); raise `SimError`."""
        return None

    def common_headers(self) -> dict[str, str]:
        """Headers the provider sends on every response (request ids and the like)."""
        return {}

    @abstractmethod
    def error_response(self, err: SimError) -> web.Response:
        """`err` in the provider's error shape."""

    @abstractmethod
    def limit_headers(self, snap: LimitSnapshot) -> dict[str, str]:
        """Rate-limit headers sent on every response while limits are configured."""

    @abstractmethod
    def rate_limited(self, decision: Decision) -> SimError:
        """The 429 for a refused request."""


class SimServer:
    """One simulated provider on a real socket.

    `received` keeps every request seen (the oldest half is dropped past `max_received`);
    `scenario` may be swapped between requests, and a new scenario restarts its fault RNG.
    """

    def __init__(
        self,
        kind: Kind,
        scenario: SimScenario,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "sim",
        max_received: int = 10_000,
    ) -> None:
        self.kind: Kind = kind
        self.scenario = scenario
        self.host = host
        self.port = port
        self.name = name
        self.base_url = ""
        self.received: list[ReceivedRequest] = []
        self.max_received = max_received
        self.request_count = 0
        self.bytes_received = 0
        self.cache = PrefixCache()
        self.limiter = SlidingWindow()
        self.wire = _make_wire(kind, self)
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._fault_scenario: SimScenario | None = None
        self._fault_rng = random.Random(0)
        self._jitter_rng = random.Random(0)
        self._slow_rng = random.Random(0)
        self._scenario_requests = 0

    async def start(self) -> None:
        """Bind and serve; afterwards `port` and `base_url` are set."""
        # Loading the tokenizer takes about a second: do it off the loop, before serving.
        await asyncio.to_thread(tx.encode, "warm up")
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        app.add_routes(self.wire.routes())
        # A closed sim stops within a second (in-flight handlers are cancelled after that).
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        root = f"http://{self.host}:{self.port}"
        self.base_url = root + "/v1" if self.kind == "openai" else root

    async def close(self) -> None:
        """Stop serving; requests hanging on a `timeout` fault are dropped."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- request pipeline ------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        bad_json = False
        # A file upload (the Batch API's) is a form, not JSON: its handler reads `raw`.
        form = request.content_type.startswith("multipart/")
        if raw and not form:
            try:
                body = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                bad_json = True
        self.received.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        if len(self.received) > self.max_received:
            # A long-running demo must not grow without bound; tests see far fewer requests.
            del self.received[: len(self.received) // 2]
        self.request_count += 1
        self.bytes_received += len(raw)
        request[_BODY] = body
        request[_RAW] = raw
        try:
            self._check_key(request)
            self.wire.precheck(request)
            if bad_json or (raw and not form and not isinstance(body, dict)):
                raise SimError(400, "The request body is not a valid JSON object.")
            response = await handler(request)
        except SimError as err:
            response = self.wire.error_response(err)
            response.headers.update(err.headers)
        except SimBadRequest as err:
            response = self.wire.error_response(SimError(400, err.message, param=err.param))
        except web.HTTPException as exc:
            response = self.wire.error_response(SimError(exc.status, exc.reason))
        except _Drop:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        except (_Cut, ConnectionError):
            stream = request.get(_STREAM)
            return stream if stream is not None else web.Response(status=500)
        if not response.prepared:
            for key, value in self.wire.common_headers().items():
                response.headers.setdefault(key, value)
        if not response.prepared and self._limited:
            snap = self.limiter.peek(self.scenario.rpm, self.scenario.tpm)
            for key, value in self.wire.limit_headers(snap).items():
                response.headers.setdefault(key, value)
        return response

    @property
    def _limited(self) -> bool:
        return self.scenario.rpm is not None or self.scenario.tpm is not None

    def _check_key(self, request: web.Request) -> None:
        expected = self.scenario.api_key
        if expected is None:
            return
        presented = self.wire.presented_key(request)
        if presented != expected:
            # Never echo the presented key: it may be a real secret sent to the wrong place.
            why = "No API key provided." if not presented else "Incorrect API key provided."
            raise SimError(401, why, code="invalid_api_key")

    def body(self, request: web.Request) -> dict[str, Any]:
        """The request's parsed JSON object (`{}` if it had no body)."""
        body = request.get(_BODY)
        return body if isinstance(body, dict) else {}

    def raw(self, request: web.Request) -> bytes:
        """The request's body as it arrived."""
        raw: bytes = request.get(_RAW, b"")
        return raw

    def plan(self, ask: Ask) -> Plan:
        """The reply to `ask` under the current scenario (not yet committed to the cache)."""
        return plan_reply(ask, self.scenario, self.cache)

    async def admit(self, request: web.Request, tokens: int, stream: bool = False) -> Gate:
        """Apply faults, then rate limits, to a request that would use `tokens` tokens.

        A `cut` fault cuts a `stream` after its chunks and drops any other request.
        Returns the admitted request's gate, or raises: `SimError` (status fault, 429),
        `_Drop` (drop fault, or timeout fault once the server closes).
        """
        cut_after = None
        fault = self._pick_fault()
        if fault is not None:
            if fault.kind == "status":
                raise SimError(
                    fault.status,
                    f"Simulated upstream error {fault.status}.",
                    retry_after_s=fault.retry_after_s,
                )
            if fault.kind == "timeout":
                await self._closing.wait()
                raise _Drop()
            if fault.kind == "drop" or not stream:
                raise _Drop()
            cut_after = fault.after_chunks
        headers: dict[str, str] = {}
        if self._limited:
            decision = self.limiter.admit(self.scenario.rpm, self.scenario.tpm, tokens)
            headers = self.wire.limit_headers(decision.snapshot)
            if not decision.allowed:
                err = self.wire.rate_limited(decision)
                err.headers = {**headers, **err.headers}
                raise err
        return Gate(headers=headers, cut_after=cut_after)

    def _pick_fault(self) -> Any:
        scenario = self.scenario
        if self._fault_scenario is not scenario:
            # A swapped-in scenario starts afresh: its own seed, its own `first_n` count.
            self._fault_scenario = scenario
            self._fault_rng = random.Random(scenario.seed)
            self._jitter_rng = random.Random(scenario.seed + 1)
            self._slow_rng = random.Random(scenario.seed + 2)
            self._scenario_requests = 0
        index = self._scenario_requests
        self._scenario_requests += 1
        for fault in scenario.faults:
            if fault.first_n is not None and index >= fault.first_n:
                continue
            if self._fault_rng.random() < fault.rate:
                return fault
        return None

    # ---- timing ----------------------------------------------------------------------------

    def jittered(self, seconds: float) -> float:
        """`seconds` times the scenario's multiplicative jitter."""
        jitter = self.scenario.jitter
        if jitter <= 0 or seconds <= 0:
            return max(0.0, seconds)
        return max(0.0, seconds * (1 + jitter * self._jitter_rng.uniform(-1, 1)))

    def ttft_s(self) -> float:
        """This request's time to first token: jittered, and now and then in the slow tail."""
        seconds = self.jittered(self.scenario.ttft_ms / 1000)
        if self.scenario.slow_rate > 0 and self._slow_rng.random() < self.scenario.slow_rate:
            seconds *= self.scenario.slow_factor
        return seconds

    async def wait_whole(self, output_tokens: int) -> None:
        """Sleep as long as a non-streamed answer of `output_tokens` tokens takes."""
        tps = self.scenario.tokens_per_s
        rest = output_tokens / tps if tps > 0 else 0
        await asyncio.sleep(self.ttft_s() + self.jittered(rest))

    async def open_stream(
        self, request: web.Request, gate: Gate, content_type: str = "text/event-stream"
    ) -> SimStream:
        """Send the stream's headers and return its writer."""
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": content_type,
                "Cache-Control": "no-cache",
                **self.wire.common_headers(),
                **gate.headers,
            },
        )
        await response.prepare(request)
        request[_STREAM] = response
        return SimStream(self, request, response, gate.cut_after)


class SimStream:
    """Writes one streamed answer: frames, pacing, and the `cut` fault."""

    def __init__(
        self, server: SimServer, request: web.Request, response: web.StreamResponse, cut: int | None
    ) -> None:
        self._server = server
        self._request = request
        self.response = response
        self._cut = cut
        self.frames = 0
        self._started = False
        self._debt = 0.0
        self._last = time.monotonic()

    async def send(self, data: bytes) -> None:
        """Write one frame; after the `cut` fault's count, abort the connection."""
        if self._cut is not None and self.frames >= self._cut:
            self._abort()
        await self.response.write(data)
        self.frames += 1

    def _abort(self) -> NoReturn:
        if self._request.transport is not None:
            self._request.transport.abort()
        raise _Cut()

    async def pace(self, tokens: int = 1) -> None:
        """Wait until `tokens` more output tokens are due (the first wait is the TTFT)."""
        scenario = self._server.scenario
        if not self._started:
            # The first token is due at the TTFT; the rest of a first group follows at the rate.
            self._started = True
            self._debt += self._server.ttft_s()
            tokens -= 1
        if tokens > 0 and scenario.tokens_per_s > 0:
            self._debt += self._server.jittered(tokens / scenario.tokens_per_s)
        # Small waits are pooled so fast scenarios send tokens in small groups.
        if self._debt >= 0.002:
            await asyncio.sleep(self._debt)
            self._debt = 0.0

    async def finish(self) -> web.StreamResponse:
        """End the stream (a `cut` stream never ends cleanly, however short it was)."""
        if self._cut is not None:
            self._abort()
        await self.response.write_eof()
        return self.response


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event frame carrying `data` as JSON."""
    payload = msgspec.json.encode(data)
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + payload + b"\n\n"


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response encoded with msgspec."""
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _make_wire(kind: Kind, server: SimServer) -> Wire:
    # Imported here: the wire modules import this one.
    if kind == "openai":
        from tokenway.sim.wire_openai import OpenAIWire

        return OpenAIWire(server)
    if kind == "anthropic":
        from tokenway.sim.wire_anthropic import AnthropicWire

        return AnthropicWire(server)
    if kind == "gemini":
        from tokenway.sim.wire_gemini import GeminiWire

        return GeminiWire(server)
    raise ValueError(f"unknown simulated provider kind {kind!r}")
