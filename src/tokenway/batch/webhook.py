"""Webhooks of async tasks: the signature, and delivery from the job store's outbox.

When a task that named a webhook ends, the store queues its delivery with its final status
(`TaskStore.end`). Any replica's `Deliverer` takes due deliveries under a lease and POSTs the
task object, as `GET /v1/async/tasks/{id}` would answer it, with

    x-tokenway-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    x-tokenway-task-id:   the task's id (a receiver may see a delivery twice: dedupe on it)

A delivery that fails (no connection, a timeout, any status but 2xx; redirects are not
followed) is retried `webhook_backoff_s` later, doubling, until `webhook_attempts` have been
made. Deliveries run in tasks of their own, at most `_IN_FLIGHT` at once, so a slow receiver
holds up neither the runner nor other deliveries. The secret never leaves this module but as
the signature, and a log line names the receiver's host, never its full URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from tokenway.batch.egress import PublicResolver, private_literal
from tokenway.batch.objects import task_object
from tokenway.batch.store import JobStore
from tokenway.config.schema import AsyncConfig
from tokenway.store import StoreUnavailable
from tokenway.telemetry.log import log
from tokenway.telemetry.metrics import Metrics

__all__ = ["SIGNATURE_HEADER", "Deliverer", "sign", "verify"]

SIGNATURE_HEADER = "x-tokenway-signature"
_POLL_S = 1.0
_IN_FLIGHT = 8
_LEASE_MARGIN_S = 30.0


def _mac(secret: str, t: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), b"%d." % t + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, t: int) -> str:
    """The signature header's value for `body` sent at unix time `t`."""
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(
    secret: str, header: str, body: bytes, *, tolerance_s: float = 300.0, now: float | None = None
) -> bool:
    """Whether `header` signs `body` with `secret`, made within `tolerance_s` of `now`: what a
    receiver checks (constant-time, so the comparison reveals nothing of the expected MAC)."""
    parts: dict[str, str] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, value)
    try:
        t = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    return hmac.compare_digest(parts.get("v1", ""), _mac(secret, t, body))


class Deliverer:
    """Delivers due webhooks from the store, on this replica, until closed."""

    def __init__(
        self,
        store: JobStore,
        cfg: AsyncConfig,
        owner: str,
        clock: Callable[[], float] = time.time,
        *,
        metrics: Metrics,
    ) -> None:
        """`clock` is the time of the API's objects (`delivered_at`); each attempt is counted
        in `metrics.webhook_deliveries`."""
        assert cfg.webhook_secret is not None, "webhooks need a secret"
        self.store = store
        self.cfg = cfg
        self.owner = owner
        self._secret = cfg.webhook_secret
        self._clock = clock
        self._counted = metrics.webhook_deliveries
        self._wake = asyncio.Event()
        self._closing = False
        self._loop: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.create_task(self._main())

    def wake(self) -> None:
        """Look for due deliveries now."""
        self._wake.set()

    async def close(self) -> None:
        """Stop; deliveries in flight are dropped, and their leases lapse so that they are
        made again (by this replica once restarted, or another)."""
        self._closing = True
        self._wake.set()
        if self._loop is not None:
            await self._loop
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _main(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self._fill()
            except StoreUnavailable as exc:
                log.warning("webhooks: store unavailable", extra={"fields": {"error": str(exc)}})
            except Exception:  # the deliverer must outlive any one bad delivery
                log.exception("webhooks")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _POLL_S)

    async def _fill(self) -> None:
        free = _IN_FLIGHT - len(self._sending)
        if free <= 0:
            return
        now = time.time()
        until = now + self.cfg.webhook_timeout_s + _LEASE_MARGIN_S

        def claim() -> list[dict[str, Any]]:
            self.store.ensure()
            return self.store.tasks.claim_hooks(self.owner, free, now, until)

        for hook in await asyncio.to_thread(claim):
            task = asyncio.create_task(self._deliver(hook))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not self._closing:
            self._wake.set()  # a free slot: more may be due

    async def _deliver(self, hook: dict[str, Any]) -> None:
        try:
            await self._attempt(hook)
        except StoreUnavailable as exc:
            # The lease lapses and the delivery is made again: at least once.
            log.warning("webhook: store unavailable", extra={"fields": {"error": str(exc)}})
        except Exception:  # one bad delivery must not go unnoticed, nor stop the others
            log.exception("webhook", extra={"fields": {"task": hook.get("id")}})

    async def _attempt(self, hook: dict[str, Any]) -> None:
        task_id, url, made = hook["id"], hook["webhook"], int(hook["hook_attempts"])
        row = await asyncio.to_thread(self.store.tasks.get, task_id, None)
        if row is None:  # reaped meanwhile
            return
        body = msgspec.json.encode(task_object(row))
        error = await self._post(url, task_id, body)
        retry_at = None
        if error is not None:
            if made + 1 < self.cfg.webhook_attempts:
                retry_at = time.time() + self.cfg.webhook_backoff_s * 2**made
            log.warning(
                "webhook not delivered",
                extra={
                    "fields": {
                        "task": task_id,
                        "host": urlsplit(url).hostname,
                        "attempt": made + 1,
                        "error": error,
                        "retry": retry_at is not None,
                    }
                },
            )
        await asyncio.to_thread(
            self.store.tasks.hook_done,
            task_id,
            self.owner,
            delivered=error is None,
            error=error,
            retry_at=retry_at,
            clock=int(self._clock()),
        )
        outcome = "delivered" if error is None else "failed" if retry_at is not None else "given_up"
        self._counted[outcome].inc()

    async def _post(self, url: str, task_id: str, body: bytes) -> str | None:
        """POST one delivery; None when the receiver took it, else what went wrong."""
        if not self.cfg.webhook_private and private_literal(urlsplit(url).hostname or ""):
            return "not a public address"
        if self._session is None:
            connector = None
            if not self.cfg.webhook_private:  # names are checked by what they resolve to now
                connector = aiohttp.TCPConnector(resolver=PublicResolver())
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
        headers = {
            "content-type": "application/json",
            "user-agent": "tokenway-webhook",
            "x-tokenway-task-id": task_id,
            SIGNATURE_HEADER: sign(self._secret, body, int(time.time())),
        }
        timeout = aiohttp.ClientTimeout(total=self.cfg.webhook_timeout_s)
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            return type(exc).__name__
