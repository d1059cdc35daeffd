"""The batch runner: one per replica. It claims the lines of running batches (and of async
tasks, batches of one line) and runs them through the gateway's own request path,
coordinating with other replicas only through the job store. Its housekeeping hands whole
batches to `batch.lifecycle`, which validates new ones and ends those that are done, and a
batch whose provider serves its own Batch API to `batch.handoff`, which runs it there (the
runner claims none of its lines unless the hand-off falls back).

A line runs as an in-process request (`gateway.internal`): the key's admission limits and
budgets, routing, failover, pricing and accounting are exactly those of an HTTP request, with
the key's priority lowered to `low` and the ledger row in mode `batch` (priced with the batch
discount where the price book has one), or `async` for a task. Work runs earliest deadline
first; a task's request carries the routing headers it was sent with, and no attempt of it
outlives its deadline. At most `batch.concurrency` lines run at once per replica, none for a
model whose capacity has interactive requests queued and only one while the event loop lags
(`throttle`); a line the gateway refuses before sending it (the key's rate limit, low priority
shed at a full model) goes back to the queue to retry later.

Exactly once, across crashes:

1. A line is claimed under a lease (renewed while it runs; lapsed leases are requeued).
2. Before it is sent, the store records the send (`sends + 1`), with the prompt estimate and
   the target, and the time of the first send.
3. The in-process request does not write its ledger row: the row comes back with the answer,
   and the result and the row are stored together, once per line (the first result wins).
4. Only then is the row given to the ledger; a line's row stays in the store's outbox until a
   ledger flush made it durable, and ending a batch re-records whatever is still there (the
   ledger ignores a row it has: same request id, same timestamp).

A line found sent but unfinished (its replica died mid-request, after the provider may have
billed it) is run again; it is still one request row, carrying one `LOST` attempt per earlier
send (`lifecycle.lost_attempts`); the revenue is the served attempt's alone, so the client
pays for the line once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from tokenway.batch.handoff import Handoff
from tokenway.batch.handoff_store import OPEN_STATES
from tokenway.batch.ids import line_request_id
from tokenway.batch.lifecycle import Lifecycle, ledger_mode, lost_attempts, lost_row
from tokenway.batch.lines import ClaimedLine
from tokenway.batch.store import Ending, JobStore
from tokenway.batch.task_store import TASK_LINE
from tokenway.batch.throttle import Throttle
from tokenway.config.schema import BatchConfig
from tokenway.domain.types import Principal
from tokenway.gateway.apis import OPENAI_CHAT
from tokenway.gateway.internal import Answer, InternalCall
from tokenway.runtime import Runtime
from tokenway.store import StoreUnavailable
from tokenway.telemetry.log import log
from tokenway.tokens import count_text

__all__ = ["Dispatch", "Runner"]

Dispatch = Callable[[str, bytes, InternalCall], Awaitable[Answer]]
"""Run one request in-process: (path, JSON body, call) -> answer."""

_BUSY_S = 0.25  # housekeeping while there is work
_IDLE_S = 2.0  # and while there is none
_REFUSED_S = 1.0  # a refused line waits this long, unless the refusal says how long
_FILES_S = 600.0  # expired files, and the lines of batches ended long ago, go this often
_KEEP_LINES_S = 3600  # how long the lines of an ended batch are kept
_CONFIRM_S = 1.0
_MAX_TIMEOUT_MS = 86_400_000  # the most x-tokenway-timeout-ms may say
_decode = msgspec.json.decode
_encode = msgspec.json.encode
_INTERNAL_ERROR = _encode(
    {
        "error": {
            "message": "tokenway failed to run this request.",
            "type": "api_error",
            "param": None,
            "code": None,
        }
    }
).decode()


class _Refusal(msgspec.Struct):
    class Err(msgspec.Struct):
        code: str | None = None

    error: Err | None = None


@dataclass(frozen=True, slots=True)
class _Active:
    id: str
    endpoint: str
    model: str | None
    principal: Principal
    kind: str = "batch"
    expires_at: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    upstream_state: str | None = None

    @property
    def mode(self) -> str:
        """The ledger mode of its lines."""
        return ledger_mode(self.kind)


class Runner:
    """Runs batches on this replica until closed."""

    def __init__(
        self,
        store: JobStore,
        rt: Runtime,
        dispatch: Dispatch,
        cfg: BatchConfig,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.rt = rt
        self.dispatch = dispatch
        self.cfg = cfg
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.throttle = Throttle(rt.gates, cfg.yield_lag_ms / 1000.0)
        self._wake = asyncio.Event()
        self._urgent = False
        self._closing = False
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._active: list[_Active] = []
        self._principals: dict[str, Principal] = {}
        self._paused: dict[str | None, float] = {}  # model -> monotonic time to wait for
        self._unconfirmed: list[tuple[str, int]] = []
        self._last_housekeeping = 0.0
        self._last_file_reap = 0.0
        self._loop_task: asyncio.Task[None] | None = None
        self._helpers: list[asyncio.Task[None]] = []
        self.batches = Lifecycle(store, rt, cfg, self.owner, self._principal)
        """Validation and ending of whole batches and tasks."""
        self.handoff = Handoff(
            store, rt, cfg, self.owner, self.batches.holding, lambda: self.wake(urgent=True)
        )
        """Batches handed to their provider's own Batch API instead of run here."""

    @property
    def task_ended(self) -> Callable[[], None]:
        """Called when this replica has ended an async task (its webhook may be due)."""
        return self.batches.task_ended

    @task_ended.setter
    def task_ended(self, hook: Callable[[], None]) -> None:
        self.batches.task_ended = hook

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start working (the tables are created by the first pass, once the store answers);
        a second call does nothing."""
        if self._loop_task is not None:
            return
        self._loop_task = asyncio.create_task(self._main())
        self._helpers = [
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._confirm_loop()),
        ]

    def wake(self, urgent: bool = False) -> None:
        """Look for work now (`urgent`: new or cancelled batches too, not only free slots)."""
        self._urgent = self._urgent or urgent
        self._wake.set()

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop taking work, give running lines `grace_s` to finish, put back the rest."""
        self._closing = True
        self._wake.set()
        if self._loop_task is None:  # never started: nothing is held
            await asyncio.to_thread(self.store.close)
            return
        await self._loop_task
        await self.handoff.close()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks.values()), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for task in self._helpers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.throttle.close()
        try:
            await asyncio.to_thread(self.store.lines.release_owner, self.owner)
            await self._confirm()
        except Exception as exc:  # shutting down: their leases lapse instead
            log.warning("batch: could not hand back lines", extra={"fields": {"error": str(exc)}})
        await asyncio.to_thread(self.store.close)

    # ---- the loop -----------------------------------------------------------------------

    async def _main(self) -> None:
        failures = 0
        while not self._closing:
            self._wake.clear()
            try:
                busy = bool(self._tasks or self._active)
                due = time.monotonic() - self._last_housekeeping >= (_BUSY_S if busy else _IDLE_S)
                if due or self._urgent:
                    self._urgent = False
                    await self._housekeep()
                await self._fill()
                failures = 0
            except StoreUnavailable as exc:
                failures += 1
                log.warning("batch store unavailable", extra={"fields": {"error": str(exc)}})
            except Exception:  # the runner must outlive any one bad batch
                failures += 1
                log.exception("batch runner")
            wait = _BUSY_S if not failures else min(0.5 * 2**failures, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _housekeep(self) -> None:
        self._last_housekeeping = time.monotonic()
        await asyncio.to_thread(self.store.ensure)
        now = time.time()
        await asyncio.to_thread(self.store.lines.reap, now)
        while not self._closing:
            claimed = await asyncio.to_thread(
                self.store.claim_validation, self.owner, now, now + self.cfg.lease_s
            )
            if claimed is None:
                break
            await self.batches.validate(*claimed)
        clock = int(self.rt.now())
        for batch_id, ending in await asyncio.to_thread(self.store.finalizable, now, clock):
            if self._closing:
                break
            await self.end(batch_id, ending)
        rows = await asyncio.to_thread(self.store.active_batches, int(self.rt.now()))
        self._active = [
            _Active(
                r["id"],
                r["endpoint"],
                r["model"],
                self._principal(r),
                r["kind"],
                float(r["expires_at"]),
                _headers(r["headers"]),
                r["upstream_state"],
            )
            for r in rows
        ]
        self._principals = {b.id: b.principal for b in self._active}
        if not self.rt.draining:
            for batch in self._active:  # whether or not lines have free slots
                self._handed_off(batch)
        if self._active:
            self.throttle.start()
        else:
            await self.throttle.close()
        if time.monotonic() - self._last_file_reap >= _FILES_S:
            self._last_file_reap = time.monotonic()
            await asyncio.to_thread(self.store.reap_files, int(self.rt.now()))
            await asyncio.to_thread(self.store.purge_lines, int(self.rt.now()) - _KEEP_LINES_S)
            keep_tasks = int(self.rt.config.raw.async_.retention_days * 86400)
            await asyncio.to_thread(self.store.tasks.reap, int(self.rt.now()) - keep_tasks)

    def _principal(self, row: Mapping[str, Any]) -> Principal:
        found = self._principals.get(row["id"])
        if found is None:
            who = _decode(row["principal"], type=Principal)
            found = self._principals[row["id"]] = msgspec.structs.replace(who, priority="low")
        return found

    async def _fill(self) -> None:
        if self._closing or self.rt.draining:
            return
        free = self.cfg.concurrency - len(self._tasks)
        if free > 0 and self.throttle.lagging():
            narrowed = 1 - len(self._tasks)
            if narrowed < free:
                self.rt.metrics.batch_yields["lag"].inc()
                free = narrowed
        if free <= 0:
            return
        now = time.time()
        clock = time.monotonic()
        for batch in self._active:
            if free <= 0:
                break
            if self._handed_off(batch):
                continue
            if self._paused.get(batch.model, 0.0) > clock:
                continue
            if self.throttle.contended(batch.model):
                self.rt.metrics.batch_yields["capacity"].inc()
                continue
            if batch.kind == "async" and (batch.id, TASK_LINE) in self._tasks:
                continue  # its one line runs here already
            claimed = await asyncio.to_thread(
                self.store.lines.claim,
                batch.id,
                self.owner,
                free,
                now,
                now + self.cfg.lease_s,
                int(self.rt.now()),
            )
            for line in claimed:
                key = (line.batch_id, line.line)
                self._tasks[key] = asyncio.create_task(self._line(batch, line, key))
            free -= len(claimed)

    def _handed_off(self, batch: _Active) -> bool:
        """Whether the batch's lines are its provider's Batch API's to run (and see that
        a replica hands it off)."""
        if batch.kind != "batch" or batch.upstream_state not in OPEN_STATES:
            return False
        target = self.handoff.target(batch.model, batch.endpoint)
        if target is None or batch.model is None:
            return False
        self.handoff.ensure(batch.id, batch.model, batch.principal, target)
        return True

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.lease_s / 3)
            try:
                await asyncio.to_thread(
                    self.store.lines.renew,
                    self.owner,
                    time.time() + self.cfg.lease_s,
                    list(self._tasks),
                    list(self.batches.holding),
                )
            except StoreUnavailable as exc:
                log.warning("batch: leases not renewed", extra={"fields": {"error": str(exc)}})

    async def _confirm_loop(self) -> None:
        while True:
            await asyncio.sleep(_CONFIRM_S)
            # On failure the rows stay in the outbox; ending the batch records them again.
            with contextlib.suppress(StoreUnavailable):
                await self._confirm()

    async def _confirm(self) -> None:
        """Flush the ledger, then drop the rows it now holds from the store's outbox."""
        if not self._unconfirmed:
            return
        done, self._unconfirmed = self._unconfirmed, []
        await self.rt.ledger.flush()
        await asyncio.to_thread(self.store.lines.mark_ledgered, done)

    async def end(self, batch_id: str, ending: Ending) -> None:
        """End a batch or task that is ready to end so (`JobStore.finalizable`), unless another
        replica is ending it (`Lifecycle.end`)."""
        if await self.batches.end(batch_id, ending):
            self._principals.pop(batch_id, None)

    # ---- one line -----------------------------------------------------------------------

    async def _line(self, batch: _Active, line: ClaimedLine, key: tuple[str, int]) -> None:
        in_flight = self.rt.metrics.batch_lines_in_flight
        in_flight.inc()
        try:
            await self._run(batch, line)
        except StoreUnavailable as exc:
            # The line keeps no renewed lease: it lapses and goes back to the queue.
            log.warning("batch line not recorded", extra={"fields": {"error": str(exc)}})
        except Exception:
            # A line that trips a bug ends as an error rather than being retried forever.
            log.exception("batch line", extra={"fields": {"batch": batch.id, "line": line.line}})
            with contextlib.suppress(Exception):
                if await asyncio.to_thread(
                    self.store.lines.finish,
                    batch.id,
                    line.line,
                    self.owner,
                    ok=False,
                    status=500,
                    response=_INTERNAL_ERROR,
                    row=None,
                    now=time.time(),
                ):
                    self._tally(batch, "error")
        finally:
            in_flight.dec()
            self._tasks.pop(key, None)
            self._wake.set()

    def _tally(self, batch: _Active, outcome: str) -> None:
        self.rt.metrics.batch_lines.labels(batch.endpoint, batch.mode, outcome).inc()

    async def _run(self, batch: _Active, line: ClaimedLine) -> None:
        body = line.body.encode("utf-8")
        prompt = await self._estimate(batch.endpoint, body)
        target = self._primary(batch.model)
        # the runtime's clock, as every request's start is (a simulated day runs on its own)
        now = self.rt.now()
        sent = await asyncio.to_thread(
            self.store.lines.mark_sent, batch.id, line.line, self.owner, now, prompt, target
        )
        if not sent:
            return
        call = InternalCall(
            principal=batch.principal,
            request_id=line_request_id(batch.id, line.custom_id),
            mode=batch.mode,
            started=line.first_sent if line.first_sent is not None else now,
            lost=lost_attempts(line.sends, line.target, line.prompt_tokens, line.last_sent or now),
            headers=self._headers(batch),
        )
        answer = await self.dispatch(batch.endpoint, body, call)
        row = answer.row
        if row is None and _retry_later(answer):
            wait = _retry_after(answer)
            self._paused[batch.model] = time.monotonic() + wait
            await asyncio.to_thread(
                self.store.lines.release,
                batch.id,
                line.line,
                self.owner,
                time.time() + wait,
                unsend=True,
            )
            self._tally(batch, "refused")
            return
        if row is None and line.sends:
            # Refused this time, but sent before: the earlier sends still go on the ledger.
            row = lost_row(self.rt, call, batch.endpoint, batch.model, answer.status)
        ok = 200 <= answer.status < 300
        stored = await asyncio.to_thread(
            self.store.lines.finish,
            batch.id,
            line.line,
            self.owner,
            ok=ok,
            status=answer.status,
            response=answer.body.decode("utf-8", "replace"),
            row=_encode(row).decode() if row is not None else None,
            now=time.time(),
        )
        if stored:
            self._tally(batch, "ok" if ok else "error")
        if stored and row is not None:
            self.rt.ledger.record(row)
            self._unconfirmed.append((batch.id, line.line))
        if stored and batch.kind == "async":
            # A task is done with its one line: end it now rather than at the next pass.
            await self.end(batch.id, "completed")

    def _headers(self, batch: _Active) -> tuple[tuple[str, str], ...]:
        """The request headers of a line: a task's own, with its timeout cut to what is left
        before its deadline when that is less than its route's."""
        if batch.kind != "async":
            return batch.headers
        routes = self.rt.routes.get(batch.model or "", {})
        route = routes.get(dict(batch.headers).get("x-tokenway-task")) or routes.get(None)
        left = batch.expires_at - self.rt.now()
        if route is None or left >= route.timeout_s:
            return batch.headers
        ms = min(max(1, int(left * 1000)), _MAX_TIMEOUT_MS)
        return (*batch.headers, ("x-tokenway-timeout-ms", str(ms)))

    async def _estimate(self, endpoint: str, body: bytes) -> int:
        """The prompt tokens of a line, as recorded for a send that may be lost."""
        if len(body) < 64 * 1024:
            return self._count(endpoint, body)
        return await asyncio.to_thread(self._count, endpoint, body)

    def _count(self, endpoint: str, body: bytes) -> int:
        try:
            raw = _decode(body)
            if endpoint == "/v1/embeddings":
                texts = raw["input"] if isinstance(raw["input"], list) else [raw["input"]]
                return sum(count_text(t) for t in texts if isinstance(t, str))
            if endpoint == "/v1/chat/completions":
                return self.rt.estimate_prompt(OPENAI_CHAT.parse_request(raw))
        except Exception:  # a body the handler will refuse anyway: estimate from its size
            pass
        return len(body) // 4

    def _primary(self, model: str | None) -> str | None:
        """`provider/model` of the target a line of `model` goes to first."""
        route = self.rt.routes.get(model or "", {}).get(None)
        if route is None or not route.targets:
            return None
        t = route.targets[0]
        return f"{t.upstream.name}/{t.model}"


def _headers(stored: str | None) -> tuple[tuple[str, str], ...]:
    """A task's stored routing headers, as `[[name, value], ...]` JSON."""
    if not stored:
        return ()
    return tuple((str(k), str(v)) for k, v in _decode(stored))


def _retry_later(answer: Answer) -> bool:
    """A refusal that time will lift: the key's rate limit or a full model, not a budget."""
    if answer.status != 429:
        return False
    try:
        err = _decode(answer.body, type=_Refusal).error
    except msgspec.DecodeError:
        return True
    return err is None or err.code != "insufficient_quota"


def _retry_after(answer: Answer) -> float:
    value = answer.headers.get("retry-after")
    try:
        return min(max(float(value), 0.1), 60.0) if value else _REFUSED_S
    except ValueError:
        return _REFUSED_S
