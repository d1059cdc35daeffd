"""Whole batches and tasks, from validation to their end, on one replica.

`Lifecycle.validate` checks a new batch's input file (leased from the store by the runner's
housekeeping) and either queues its lines or fails the batch with OpenAI's errors. `end` takes
a batch or task that is ready to end (`JobStore.finalizable`) under a lease, accounts its lost
sends, makes every ledger row of its lines durable, and gives it its final status (a batch its
output and error files too). The runner (`batch.runner`) calls both; this module claims no
lines and runs none.

A lost send is a line sent upstream whose result was never recorded (its replica died
mid-request, after the provider may have billed it). Its ledger request id is derived from the
batch and `custom_id` and its timestamp is the first send, so a line is one request row
whatever happened to it, carrying one `LOST` attempt per such send, costed from the stored
prompt estimate (`usage_source: estimated`). `lost_attempts` and `lost_row` build them, for a
line run again (the runner) as for one that never will be (a cancelled or expired batch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from tokenway.accounting.ledger import RequestRow
from tokenway.batch.ids import line_request_id
from tokenway.batch.store import Ending, JobStore
from tokenway.batch.validate import LineError, validate
from tokenway.config.schema import BatchConfig
from tokenway.domain.types import Principal
from tokenway.gateway.internal import InternalCall, LostAttempt
from tokenway.runtime import Runtime
from tokenway.store import StoreUnavailable
from tokenway.telemetry.log import log

__all__ = ["Lifecycle", "ledger_mode", "lost_attempts", "lost_row"]

_API = {
    "/v1/chat/completions": "openai.chat",
    "/v1/embeddings": "openai.embeddings",
    "/v1/responses": "openai.responses",
}
_decode = msgspec.json.decode
_encode = msgspec.json.encode


def ledger_mode(kind: str) -> str:
    """The ledger mode of the lines of a batch of `kind` (`batch` or `async`)."""
    return "async" if kind == "async" else "batch"


def lost_attempts(
    sends: int, target: str | None, prompt: int | None, at: float
) -> list[LostAttempt]:
    """The lost attempts of a line sent `sends` times without a recorded result."""
    provider, _, model = (target or "unknown/unknown").partition("/")
    return [LostAttempt(provider, model, prompt or 0, at)] * max(0, int(sends))


def lost_row(
    rt: Runtime, call: InternalCall, endpoint: str, model: str | None, status: int
) -> RequestRow:
    """The ledger row of a line whose only attempts are `call`'s lost ones, ended with the
    client status `status`."""
    lost = InternalCall(
        principal=call.principal,
        request_id=call.request_id,
        mode=call.mode,
        started=call.started,
        lost=call.lost,
    )
    ctx = lost.context(rt, _API.get(endpoint, "openai.batch"), model or "")
    ctx.finish(status, "LOST")
    return lost.rows[0]


class Lifecycle:
    """Validates and ends batches and tasks for one replica's runner (`owner`)."""

    def __init__(
        self,
        store: JobStore,
        rt: Runtime,
        cfg: BatchConfig,
        owner: str,
        principal: Callable[[Mapping[str, Any]], Principal],
    ) -> None:
        """`principal` gives the principal a batch row's lines run as."""
        self.store = store
        self.rt = rt
        self.cfg = cfg
        self.owner = owner
        self._principal = principal
        self.holding: set[str] = set()
        """Batches this replica validates or ends now (their leases are renewed)."""
        self.task_ended: Callable[[], None] = lambda: None
        """Called when this replica has ended an async task (its webhook may be due)."""

    async def validate(self, batch: dict[str, Any], content: bytes | None) -> None:
        """Validate a batch leased for validation (`JobStore.claim_validation`) with its input
        file's `content` (None: the file is gone): start it, or fail it with the errors."""
        batch_id = batch["id"]
        self.holding.add(batch_id)
        try:
            principal = _decode(batch["principal"], type=Principal)
            endpoint = batch["endpoint"]
            clock = int(self.rt.now())
            if content is None:
                missing = LineError(
                    code="file_not_found",
                    message=f"The input file {batch['input_file_id']} no longer exists.",
                    param="input_file_id",
                )
                await asyncio.to_thread(
                    self.store.fail_batch, batch_id, self.owner, [missing], clock
                )
                return
            try:
                parsed = await asyncio.to_thread(
                    validate,
                    content,
                    endpoint,
                    self.cfg.max_lines,
                    lambda model: self._model_problem(principal, model, endpoint),
                )
            except Exception:  # a file that trips the validator must not be retried forever
                log.exception("batch validation", extra={"fields": {"batch": batch_id}})
                broken = LineError(
                    code="internal_error", message="tokenway could not read this input file."
                )
                await asyncio.to_thread(
                    self.store.fail_batch, batch_id, self.owner, [broken], clock
                )
                return
            if parsed.errors:
                await asyncio.to_thread(
                    self.store.fail_batch, batch_id, self.owner, parsed.errors, clock
                )
                return
            try:
                await asyncio.to_thread(
                    self.store.start_batch,
                    batch_id,
                    self.owner,
                    parsed.model,
                    parsed.requests,
                    clock,
                )
            except StoreUnavailable:
                raise  # the lease lapses and the batch is validated again later
            except Exception:
                # Lines the database refuses would refuse every retry too: a batch left
                # validating would be retried forever and stall this replica's housekeeping.
                log.exception("batch start", extra={"fields": {"batch": batch_id}})
                refused = LineError(
                    code="internal_error", message="tokenway could not store this batch's lines."
                )
                await asyncio.to_thread(
                    self.store.fail_batch, batch_id, self.owner, [refused], clock
                )
        finally:
            self.holding.discard(batch_id)

    def _model_problem(self, principal: Principal, model: str, endpoint: str) -> str | None:
        cfg = self.rt.config.models.get(model)
        kind = "embedding" if endpoint == "/v1/embeddings" else "chat"
        if cfg is None or cfg.kind != kind:
            return f"The model '{model}' does not exist or you do not have access to it."
        if principal.models is not None and model not in principal.models:
            return f"This key may not use the model '{model}'."
        return None

    async def end(self, batch_id: str, ending: Ending) -> bool:
        """End a batch or task that is ready to end so (`JobStore.finalizable`), unless another
        replica is ending it: account its lost sends, make its ledger rows durable, then give
        it its final status (and a batch its files). False if it was not this replica's to
        end."""
        now = time.time()
        claimed = await asyncio.to_thread(
            self.store.claim_finalize,
            batch_id,
            ending,
            self.owner,
            now,
            now + self.cfg.lease_s,
            int(self.rt.now()),
        )
        if claimed is None:
            return False
        self.holding.add(batch_id)
        try:
            if ending != "completed":
                await self._account_lost(claimed)
            pending = await asyncio.to_thread(self.store.lines.unledgered, batch_id)
            if pending:
                for r in pending:
                    self.rt.ledger.record(_decode(r["ledger_row"], type=RequestRow))
                await self.rt.ledger.flush()
                await asyncio.to_thread(
                    self.store.lines.mark_ledgered, [(batch_id, r["line"]) for r in pending]
                )
            if claimed["kind"] == "async":
                ended = await asyncio.to_thread(
                    self.store.tasks.end, batch_id, ending, self.owner, int(self.rt.now())
                )
                if ended:
                    self._count_ended(claimed, ending)
                    self.task_ended()
            else:
                ended = await asyncio.to_thread(
                    self.store.end_batch, batch_id, ending, self.owner, int(self.rt.now())
                )
                if ended:
                    self._count_ended(claimed, ending)
        finally:
            self.holding.discard(batch_id)
        return True

    def _count_ended(self, claimed: Mapping[str, Any], ending: Ending) -> None:
        status: str = ending
        if claimed["kind"] == "async" and ending == "completed" and not claimed["completed"]:
            # A task's one line decides its status (`TaskStore.end`): its failure fails it.
            status = "failed"
        self.rt.metrics.batches_ended.labels(claimed["kind"], status).inc()

    async def _account_lost(self, row: dict[str, Any]) -> None:
        """Ledger rows for the lines of a cancelled or expired batch that were sent and will
        never run again."""
        lost = await asyncio.to_thread(self.store.lines.lost, row["id"])
        if not lost:
            return
        principal = self._principal(row)
        mode = ledger_mode(row["kind"])
        counted = self.rt.metrics.batch_lines.labels(row["endpoint"], mode, "lost")
        for line in lost:
            call = InternalCall(
                principal=principal,
                request_id=line_request_id(row["id"], line["custom_id"]),
                mode=mode,
                started=line["first_sent"],
                lost=lost_attempts(
                    line["sends"], line["target"], line["prompt_tokens"], line["last_sent"]
                ),
            )
            made = lost_row(self.rt, call, row["endpoint"], row["model"], 499)
            await asyncio.to_thread(
                self.store.lines.put_row, row["id"], line["line"], _encode(made).decode()
            )
            counted.inc()
