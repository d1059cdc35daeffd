"""The Batch API's operations, for the HTTP endpoints (and any other front end): files and
batches scoped to the key that made them, validated as OpenAI validates them, with the
runner that executes the batches on this replica. Async tasks (`tasks`, batch/tasks.py) share
the store and the runner, and their webhooks are delivered from here (`webhooks`).

Bad requests raise the gateway's client errors (`BadRequest`, `NotFound`, `PayloadTooLarge`,
`Conflict`), which the endpoints render in OpenAI's error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from tokenway.batch import ids
from tokenway.batch.errors import Conflict, in_store
from tokenway.batch.listing import limit_of, list_object
from tokenway.batch.objects import batch_object, file_object
from tokenway.batch.runner import Runner
from tokenway.batch.store import JobStore
from tokenway.batch.tasks import TaskService
from tokenway.batch.validate import ENDPOINTS
from tokenway.batch.webhook import Deliverer
from tokenway.config.schema import window_seconds
from tokenway.domain.types import Principal
from tokenway.errors import BadRequest, NotFound, PayloadTooLarge
from tokenway.gateway import internal
from tokenway.runtime import Runtime
from tokenway.store import open_database

__all__ = ["BatchService", "Conflict"]

# What OpenAI accepts as a file's purpose; tokenway keeps files for batches only.
PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
# OpenAI's default expiry of a purpose=batch upload, and the range `expires_after` may set.
BATCH_FILE_TTL_S = 30 * 86400
MIN_TTL_S, MAX_TTL_S = 3600, 30 * 86400
_MAX_METADATA = 16

_encode = msgspec.json.encode
T = TypeVar("T")


def _ttl(seconds: Any, anchor: Any, param: str) -> int:
    if anchor != "created_at":
        raise BadRequest(f"{param}.anchor: must be 'created_at'.", param=f"{param}.anchor")
    # A form field holds a string. `str.isdigit` alone is true of '²', which `int` refuses, and
    # of runs of digits too long for `int` to read: only short ASCII digit strings are numbers.
    if isinstance(seconds, str) and seconds.isascii() and seconds.isdigit() and len(seconds) <= 18:
        seconds = int(seconds)
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        raise BadRequest(f"{param}.seconds: must be an integer.", param=f"{param}.seconds")
    if not MIN_TTL_S <= seconds <= MAX_TTL_S:
        raise BadRequest(
            f"{param}.seconds: must be between {MIN_TTL_S} and {MAX_TTL_S}.",
            param=f"{param}.seconds",
        )
    return seconds


def _missing_file(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="file_id")


def _missing_batch(batch_id: str) -> NotFound:
    return NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")


class BatchService:
    """Files and batches for one gateway replica. `app` is the gateway that runs the lines."""

    def __init__(self, rt: Runtime, app: internal.App) -> None:
        self.rt = rt
        self.cfg = rt.config.raw.batch
        self.store = JobStore(open_database(rt.config.raw.storage.ledger))

        async def dispatch(path: str, body: bytes, call: internal.InternalCall) -> Any:
            return await internal.call(app, path, body, call)

        self.runner = Runner(self.store, rt, dispatch, self.cfg)
        self.tasks = TaskService(rt, self.store, self.runner, self._store)
        self.webhooks: Deliverer | None = None
        if rt.config.raw.async_.webhook_secret is not None:
            self.webhooks = Deliverer(
                self.store,
                rt.config.raw.async_,
                self.runner.owner,
                clock=rt.now,
                metrics=rt.metrics,
            )
            self.runner.task_ended = self.webhooks.wake

    def start(self) -> None:
        self.runner.start()
        if self.webhooks is not None:
            self.webhooks.start()

    async def close(self) -> None:
        if self.webhooks is not None:  # first: the runner closes the store
            await self.webhooks.close()
        await self.runner.close()

    def _now(self) -> int:
        return int(self.rt.now())

    async def _store(self, fn: Callable[..., T], *args: Any) -> T:
        return await in_store(self.store, fn, *args)

    # ---- files --------------------------------------------------------------------------

    async def upload(
        self,
        principal: Principal,
        purpose: str | None,
        filename: str | None,
        content: bytes | None,
        expires_after: tuple[Any, Any] | None = None,
    ) -> dict[str, Any]:
        """Store an uploaded file (`expires_after`: its (seconds, anchor), if given)."""
        if purpose is None:
            raise BadRequest("'purpose' is required.", param="purpose")
        if purpose not in PURPOSES:
            raise BadRequest(
                f"'{purpose}' is not a valid purpose; expected one of "
                f"{', '.join(sorted(PURPOSES))}.",
                param="purpose",
            )
        if purpose != "batch":
            raise BadRequest(
                "tokenway stores files for the Batch API only: purpose must be 'batch'.",
                param="purpose",
            )
        if content is None or filename is None:
            raise BadRequest("'file' is required (a file part with a filename).", param="file")
        if not content:
            raise BadRequest("The file is empty.", param="file")
        if len(content) > self.cfg.max_file_bytes:
            raise PayloadTooLarge(
                f"The file is {len(content)} bytes; the limit is {self.cfg.max_file_bytes}."
            )
        ttl = BATCH_FILE_TTL_S
        if expires_after is not None:
            ttl = _ttl(expires_after[0], expires_after[1], "expires_after")
        now = self._now()
        row = await self._store(
            self.store.put_file,
            ids.file_id(),
            principal.name,
            purpose,
            filename,
            content,
            now,
            now + ttl,
        )
        return file_object(row)

    async def file(self, principal: Principal, file_id: str) -> dict[str, Any]:
        row = await self._store(self.store.get_file, principal.name, file_id, self._now())
        if row is None:
            raise _missing_file(file_id)
        return file_object(row)

    async def files(
        self,
        principal: Principal,
        *,
        limit: str | None = None,
        after: str | None = None,
        order: str | None = None,
        purpose: str | None = None,
    ) -> dict[str, Any]:
        if order not in (None, "asc", "desc"):
            raise BadRequest("order: must be 'asc' or 'desc'.", param="order")
        page = await self._store(
            lambda: self.store.list_files(
                principal.name,
                self._now(),
                limit=limit_of(limit, 10_000, 10_000),
                after=after,
                ascending=order == "asc",
                purpose=purpose,
            )
        )
        return list_object(page, after, file_object)

    async def content(self, principal: Principal, file_id: str) -> bytes:
        data = await self._store(self.store.file_content, principal.name, file_id, self._now())
        if data is None:
            raise _missing_file(file_id)
        return data

    async def delete(self, principal: Principal, file_id: str) -> dict[str, Any]:
        if not await self._store(self.store.delete_file, principal.name, file_id):
            raise _missing_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # ---- batches ------------------------------------------------------------------------

    async def create(self, principal: Principal, doc: dict[str, Any]) -> dict[str, Any]:
        """Create a batch from the body of `POST /v1/batches` (validated here; its input file
        is validated by the runner, which fails the batch if it is malformed)."""
        file_id = doc.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise BadRequest("'input_file_id' is required.", param="input_file_id")
        endpoint = doc.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise BadRequest(
                f"'endpoint' must be one of {', '.join(ENDPOINTS)}"
                + (f"; got {endpoint!r}." if endpoint is not None else "."),
                param="endpoint",
            )
        window = doc.get("completion_window")
        if window not in self.cfg.completion_windows:
            raise BadRequest(
                f"'completion_window' must be one of {', '.join(self.cfg.completion_windows)}.",
                param="completion_window",
            )
        metadata = _metadata(doc.get("metadata"))
        output_ttl = None
        after = doc.get("output_expires_after")
        if after is not None:
            if not isinstance(after, dict):
                raise BadRequest(
                    "'output_expires_after' must be an object.", param="output_expires_after"
                )
            output_ttl = _ttl(after.get("seconds"), after.get("anchor"), "output_expires_after")
        now = self._now()
        found = await self._store(self.store.get_file, principal.name, file_id, now)
        if found is None:
            raise NotFound(f"No such File object: {file_id}", param="input_file_id")
        if found["purpose"] != "batch":
            raise BadRequest(
                f"The file {file_id} was not uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        row = {
            "id": ids.batch_id(),
            "owner": principal.name,
            "principal": _encode(principal).decode(),
            "endpoint": endpoint,
            "input_file_id": file_id,
            "completion_window": window,
            "metadata": _encode(metadata).decode() if metadata is not None else None,
            "output_expires_s": output_ttl,
            "created_at": now,
            "expires_at": now + window_seconds(str(window)),
        }
        created = await self._store(self.store.create_batch, row)
        self.runner.wake(urgent=True)
        return batch_object(created)

    async def batch(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        row = await self._store(self.store.get_batch, principal.name, batch_id)
        if row is None:
            raise _missing_batch(batch_id)
        return batch_object(row)

    async def batches(
        self, principal: Principal, *, limit: str | None = None, after: str | None = None
    ) -> dict[str, Any]:
        page = await self._store(
            lambda: self.store.list_batches(
                principal.name, limit=limit_of(limit, 20, 100), after=after
            )
        )
        return list_object(page, after, batch_object)

    async def cancel(self, principal: Principal, batch_id: str) -> dict[str, Any]:
        try:
            row, cancelling = await self._store(
                self.store.cancel_batch, principal.name, batch_id, self._now()
            )
        except LookupError:
            raise _missing_batch(batch_id) from None
        if not cancelling:
            raise Conflict(
                f"Cannot cancel a batch with status '{row['status']}'.", param="batch_id"
            )
        self.runner.wake(urgent=True)
        return batch_object(row)


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest("'metadata' must be an object of strings.", param="metadata")
    if len(value) > _MAX_METADATA:
        raise BadRequest(f"'metadata' may hold at most {_MAX_METADATA} keys.", param="metadata")
    for k, v in value.items():
        if len(k) > 64 or not isinstance(v, str) or len(v) > 512:
            raise BadRequest(
                "'metadata': keys are at most 64 characters, values strings of at most 512.",
                param=f"metadata.{k}"[:80],
            )
    return value
