"""The Batch API's objects as OpenAI shapes them (`OpenAIFile`, `Batch`, the records of output
and error files), and tokenway's async task object, from the job store's rows."""

from __future__ import annotations

from typing import Any

import msgspec

from tokenway.batch.ids import line_record_id, line_request_id, task_request_id
from tokenway.domain.types import Usage

__all__ = [
    "TASK_ERRORS",
    "batch_object",
    "error_record",
    "file_object",
    "response_record",
    "task_object",
    "usage_object",
]

_decode = msgspec.json.decode
_encode = msgspec.json.encode

_TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    """An `OpenAIFile` from a `batch_files` row."""
    return {
        "id": row["id"],
        "object": "file",
        "bytes": int(row["bytes"]),
        "created_at": int(row["created_at"]),
        "expires_at": None if row["expires_at"] is None else int(row["expires_at"]),
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
    }


def batch_object(row: dict[str, Any]) -> dict[str, Any]:
    """A `Batch` from a `batches` row."""
    errors = _decode(row["errors"]) if row["errors"] else None
    doc: dict[str, Any] = {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "model": row["model"],
        "errors": {"object": "list", "data": errors} if errors is not None else None,
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
    }
    for name in _TIMES:
        value = row[name]
        doc[name] = None if value is None else int(value)
    doc["request_counts"] = {
        "total": int(row["total"]),
        "completed": int(row["completed"]),
        "failed": int(row["failed"]),
    }
    doc["usage"] = _decode(row["usage"]) if row["usage"] else None
    doc["metadata"] = _decode(row["metadata"]) if row["metadata"] else None
    return doc


def usage_object(served: list[Usage]) -> dict[str, Any]:
    """A batch's `usage`: the tokens of the answers it returned."""
    inp = sum(u.input_tokens for u in served)
    out = sum(u.output_tokens for u in served)
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": sum(u.cache_read_tokens for u in served)},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": sum(u.reasoning_tokens for u in served)},
        "total_tokens": inp + out,
    }


def response_record(batch: str, custom_id: str, status: int, body: str) -> bytes:
    """An output (or error) file record of a request that got an HTTP answer; `body` is that
    answer's JSON text, embedded as is."""
    return _encode(
        {
            "id": line_record_id(batch, custom_id),
            "custom_id": custom_id,
            "response": {
                "status_code": status,
                "request_id": line_request_id(batch, custom_id),
                "body": msgspec.Raw(body.encode("utf-8")),
            },
            "error": None,
        }
    )


def error_record(batch: str, custom_id: str, code: str, message: str) -> bytes:
    """An error file record of a request that never got an answer (the batch expired)."""
    return _encode(
        {
            "id": line_record_id(batch, custom_id),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


_TASK_ENDS = ("completed_at", "failed_at", "expired_at", "cancelled_at")
TASK_ERRORS = {
    "expired": {"code": "task_expired", "message": "The task was not run before its deadline."},
    "cancelled": {"code": "task_cancelled", "message": "The task was cancelled before it ran."},
}
"""The `error` of a task that ended without running, by its status."""


def task_object(row: dict[str, Any]) -> dict[str, Any]:
    """An async task from `TaskStore.get`'s row. `result` is the answer the endpoint gave
    (its HTTP status and JSON body); `expires_at` is the deadline."""
    status = row["status"]
    if status in ("in_progress", "finalizing", "validating"):
        status = "queued" if row["line_state"] == "queued" else "in_progress"
    started = row["started_at"] if row["started_at"] is not None else row["first_sent"]
    result = None
    if row["result_status"] is not None:
        result = {"status_code": int(row["result_status"]), "body": _json(row["result"])}
    doc: dict[str, Any] = {
        "id": row["id"],
        "object": "async.task",
        "endpoint": row["endpoint"],
        "model": row["model"],
        "status": status,
        "request_id": task_request_id(row["id"]),
        "created_at": int(row["created_at"]),
        "started_at": None if started is None else int(started),
        "expires_at": int(row["expires_at"]),
    }
    for name in _TASK_ENDS:
        doc[name] = None if row[name] is None else int(row[name])
    doc["result"] = result
    doc["usage"] = _decode(row["usage"]) if row["usage"] else None
    doc["error"] = TASK_ERRORS.get(status)
    doc["webhook"] = None
    if row["webhook"] is not None:
        doc["webhook"] = {
            "url": row["webhook"],
            # waiting: the task has not ended; pending: being delivered or to be retried
            "status": row["hook_state"] or "waiting",
            "attempts": int(row["hook_attempts"]),
            "delivered_at": row["hook_delivered_at"],
            "last_error": row["hook_error"],
        }
    return doc


def _json(text: str | None) -> Any:
    """A stored answer body, embedded as is when it is JSON (the handlers answer JSON)."""
    if text is None:
        return None
    raw = text.encode("utf-8")
    try:
        _decode(raw)
    except msgspec.DecodeError:
        return text
    return msgspec.Raw(raw)
