"""Identifiers of the Batch API's objects and of async tasks. Time-ordered and random where an
object is created once (an upload, a batch, a task); derived from the batch where a crash may
make a replica produce it again (a line's ledger request id, its output record id, the output
and error files), so the second time is the same object."""

from __future__ import annotations

import hashlib
import secrets
import time

__all__ = [
    "TASK_CUSTOM_ID",
    "batch_id",
    "file_id",
    "line_record_id",
    "line_request_id",
    "result_file_id",
    "task_id",
    "task_request_id",
]

TASK_CUSTOM_ID = "task"
"""The `custom_id` of an async task's one line."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def _ordered(random_hex: int) -> str:
    # The time in microseconds first: lists sort by (created_at, id), so objects created in
    # the same second still list in the order they were made.
    return f"{time.time_ns() // 1000:014x}" + secrets.token_hex(random_hex // 2)


def file_id() -> str:
    """A new uploaded file's id."""
    return "file-" + _ordered(12)


def batch_id() -> str:
    """A new batch's id."""
    return "batch_" + _ordered(18)


def task_id() -> str:
    """A new async task's id."""
    return "task_" + _ordered(18)


def line_request_id(batch: str, custom_id: str) -> str:
    """The ledger request id of a batch line: the same on every run of the line."""
    return "req_" + _digest("line", batch, custom_id)[:32]


def line_record_id(batch: str, custom_id: str) -> str:
    """The `id` of a line's record in the output or error file."""
    return "batch_req_" + _digest("record", batch, custom_id)[:32]


def result_file_id(batch: str, kind: str) -> str:
    """The id of a batch's `output` or `error` file."""
    return "file-" + _digest("file", batch, kind)[:24]


def task_request_id(task: str) -> str:
    """The ledger request id of an async task (that of its line)."""
    return line_request_id(task, TASK_CUSTOM_ID)
