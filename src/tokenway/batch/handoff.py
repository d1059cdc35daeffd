"""Handing a whole batch to its provider's own Batch API, which bills about half the normal
price, instead of running its lines here.

A chat completions batch whose model's first target is an OpenAI-kind provider with
`batch_api: true` is not run line by line by the runner: one replica (holding the batch's
lease, `batch.handoff_store`) uploads its lines with `model` rewritten to the target's
provider model, creates the upstream batch, polls it every `batch.upstream_poll_s`, downloads
the output file and records each answered line exactly as the runner records one: its result
(the client-facing chat completion, reporting the client's model) and its ledger row (one
request row, mode `batch`, its attempt priced with `batch_api=True`, revenue from the key's
plan), stored once through `LineQueue.finish`. The normal finalisation then writes the client's
output and error files.

Whatever the upstream batch did not answer (it could not be created, it failed or expired, or
a line is in its error file) falls back to the runner, which runs those lines in-process as it
runs any batch's. A replica that dies mid-way leaves the upstream ids in the store; whoever
takes the lease next resumes polling the same upstream batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec

from tokenway.accounting.ledger import RequestRow
from tokenway.batch.handoff_store import HandoffStore
from tokenway.batch.ids import line_request_id
from tokenway.batch.store import JobStore
from tokenway.batch.upstream_batch import UpstreamBatchClient, UpstreamBatchError
from tokenway.config.schema import BatchConfig
from tokenway.domain.types import Principal
from tokenway.execution.failover import Target
from tokenway.gateway.internal import InternalCall
from tokenway.runtime import Runtime
from tokenway.store import StoreUnavailable
from tokenway.telemetry.log import log
from tokenway.translate.openai_response import encode_response, parse_response, parse_usage

__all__ = ["Handoff"]

_CHAT = "/v1/chat/completions"
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
_RETRY_S = 2.0  # how often a replica tries to take a hand-off another replica holds
_encode = msgspec.json.encode


class Handoff:
    """Hands this replica's share of eligible batches to their providers (`ensure`)."""

    def __init__(
        self,
        store: JobStore,
        rt: Runtime,
        cfg: BatchConfig,
        owner: str,
        holding: set[str],
        wake: Callable[[], None],
    ) -> None:
        """`holding` is the set of batches whose leases the runner's heartbeat renews; `wake`
        tells the runner to look again (a batch fell back, or is ready to end)."""
        self.store = store
        self.leases = HandoffStore(store.db)
        self.rt = rt
        self.cfg = cfg
        self.owner = owner
        self._holding = holding
        self._wake = wake
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._next_try: dict[str, float] = {}

    def target(self, model: str | None, endpoint: str) -> Target | None:
        """The target a batch of `model` on `endpoint` is handed to, if it is handed off."""
        if endpoint != _CHAT:
            return None
        route = self.rt.routes.get(model or "", {}).get(None)
        if route is None or not route.targets:
            return None
        first = route.targets[0]
        upstream = first.upstream
        return first if upstream.kind == "openai" and upstream.cfg.batch_api else None

    def ensure(self, batch_id: str, model: str, principal: Principal, target: Target) -> None:
        """Hand the batch off here unless this replica does already, or tried a moment ago
        (another replica may hold it)."""
        clock = time.monotonic()
        if batch_id in self._tasks or self._next_try.get(batch_id, 0.0) > clock:
            return
        self._next_try[batch_id] = clock + _RETRY_S
        task = asyncio.create_task(self._run(batch_id, model, principal, target))
        self._tasks[batch_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(batch_id, None))

    async def close(self) -> None:
        """Stop handing off; the upstream batches go on, and whoever takes the lease next
        resumes them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, batch_id: str, model: str, principal: Principal, target: Target) -> None:
        now = time.time()
        claimed = await asyncio.to_thread(
            self.leases.claim, batch_id, self.owner, now, now + self.cfg.lease_s
        )
        if claimed is None:
            return
        self._holding.add(batch_id)
        client = UpstreamBatchClient(target.upstream)
        state: str | None = None  # unchanged: the next holder resumes where this one stopped
        try:
            state = await self._hand_off(claimed, model, principal, target, client)
        except StoreUnavailable as exc:
            log.warning("batch hand-off: store unavailable", extra={"fields": {"error": str(exc)}})
        except Exception:  # a bug must not strand the batch: its lines run here instead
            log.exception("batch hand-off", extra={"fields": {"batch": batch_id}})
            state = "fallback"
        finally:
            self._holding.discard(batch_id)
            await client.close()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.leases.release, batch_id, self.owner, state)
            self._wake()

    async def _hand_off(
        self,
        claimed: dict[str, Any],
        model: str,
        principal: Principal,
        target: Target,
        client: UpstreamBatchClient,
    ) -> str | None:
        """Run the hand-off to its end; the upstream state to leave (None: unchanged)."""
        batch_id = claimed["id"]
        lines = await asyncio.to_thread(self.leases.queued, batch_id, self.rt.now())
        if not lines:
            return "done"
        upstream_id: str | None = claimed["upstream_batch_id"]
        fields = {"batch": batch_id, "provider": target.upstream.name}
        if upstream_id is None:
            file_id: str | None = claimed["upstream_file_id"]
            try:
                if file_id is None:
                    file_id = await client.upload(_input(lines, target.model))
                    saved = await asyncio.to_thread(
                        self.leases.save, batch_id, self.owner, file_id, None
                    )
                    if not saved:
                        return None
                upstream_id = await client.create(file_id)
            except UpstreamBatchError as exc:
                log.warning(
                    "batch hand-off refused: its lines run here",
                    extra={"fields": {**fields, "status": exc.status, "error": str(exc)}},
                )
                return "fallback"
            if not await asyncio.to_thread(
                self.leases.save, batch_id, self.owner, file_id, upstream_id
            ):
                return None
        doc = await self._wait(batch_id, upstream_id, client)
        if doc is None:
            return None
        if doc.get("status") != "completed":
            log.warning(
                "upstream batch did not complete: its lines run here",
                extra={"fields": {**fields, "status": doc.get("status")}},
            )
        output = doc.get("output_file_id")
        if isinstance(output, str) and output:
            try:
                content = await client.content(output)
            except UpstreamBatchError as exc:
                log.warning(
                    "upstream batch output unreadable: its lines run here",
                    extra={"fields": {**fields, "status": exc.status, "error": str(exc)}},
                )
                return "fallback"
            await self._record(batch_id, lines, content, model, principal, target)
        left = await asyncio.to_thread(self.leases.queued, batch_id, self.rt.now())
        return "fallback" if left else "done"

    async def _wait(
        self, batch_id: str, upstream_id: str, client: UpstreamBatchClient
    ) -> dict[str, Any] | None:
        """Poll the upstream batch until it ends; None if this replica should stop (its lease
        lapsed, or the client's batch is cancelling or past its window)."""
        while True:
            try:
                doc = await client.retrieve(upstream_id)
                if doc.get("status") in _ENDED:
                    return doc
            except UpstreamBatchError as exc:
                if 400 <= exc.status < 500 and exc.status not in (408, 409, 429):
                    return {"status": "failed"}  # it is gone, or never was ours
                log.warning(
                    "upstream batch poll failed",
                    extra={"fields": {"batch": batch_id, "status": exc.status}},
                )
            await asyncio.sleep(self.cfg.upstream_poll_s)
            held = await asyncio.to_thread(self.leases.held, batch_id, self.owner)
            if held is None or held["status"] != "in_progress":
                return None
            if int(held["expires_at"]) <= int(self.rt.now()):
                return None

    async def _record(
        self,
        batch_id: str,
        lines: list[dict[str, Any]],
        content: bytes,
        model: str,
        principal: Principal,
        target: Target,
    ) -> None:
        """Store each answered line's result and ledger row, then give the rows to the
        ledger (the outbox keeps them until it has them, as for runner-run lines)."""
        by_id = {r["custom_id"]: r for r in lines}
        results: list[tuple[int, str, RequestRow]] = []
        for raw in content.splitlines():
            try:
                rec = json.loads(raw) if raw.strip() else None
            except ValueError:
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("custom_id"), str):
                continue
            line = by_id.pop(rec["custom_id"], None)
            resp = rec.get("response")
            if line is None or not isinstance(resp, dict) or resp.get("status_code") != 200:
                continue  # not answered: the runner runs it
            body = resp.get("body")
            if isinstance(body, dict):
                answer, row = self._result(batch_id, line, body, model, principal, target)
                results.append((int(line["line"]), answer, row))
        stored = await asyncio.to_thread(self._store_results, batch_id, results)
        counted = self.rt.metrics.batch_lines.labels(_CHAT, "batch", "ok")
        for _, _, row in stored:
            self.rt.ledger.record(row)
            counted.inc()
        if stored:
            await self.rt.ledger.flush()
            await asyncio.to_thread(
                self.store.lines.mark_ledgered, [(batch_id, n) for n, _, _ in stored]
            )

    def _result(
        self,
        batch_id: str,
        line: dict[str, Any],
        body: dict[str, Any],
        model: str,
        principal: Principal,
        target: Target,
    ) -> tuple[str, RequestRow]:
        """A line's client-facing answer and its ledger row."""
        call = InternalCall(
            principal=principal,
            request_id=line_request_id(batch_id, line["custom_id"]),
            mode="batch",
            started=line["first_sent"],
        )
        ctx = call.context(self.rt, "openai.chat", model)
        usage = parse_usage(body.get("usage") or {})
        ctx.attempt_batched(target.upstream.name, target.model, usage)
        ctx.finish(200, "OK")
        try:
            answer = encode_response(parse_response(body), model)
        except Exception:  # an odd body is still the answer; only the model name is ours
            answer = {**body, "model": model}
        return _encode(answer).decode(), call.rows[0]

    def _store_results(
        self, batch_id: str, results: list[tuple[int, str, RequestRow]]
    ) -> list[tuple[int, str, RequestRow]]:
        """Store results (blocking); those stored now (a line has one result, the first)."""
        stored = []
        for n, answer, row in results:
            if self.store.lines.finish(
                batch_id,
                n,
                self.owner,
                ok=True,
                status=200,
                response=answer,
                row=_encode(row).decode(),
                now=time.time(),
            ):
                stored.append((n, answer, row))
        return stored


def _input(lines: list[dict[str, Any]], provider_model: str) -> bytes:
    """The upstream input file: the lines, each naming the provider's model."""
    out = []
    for r in lines:
        body = json.loads(r["body"])
        body["model"] = provider_model
        doc = {"custom_id": r["custom_id"], "method": "POST", "url": _CHAT, "body": body}
        out.append(_encode(doc) + b"\n")
    return b"".join(out)
