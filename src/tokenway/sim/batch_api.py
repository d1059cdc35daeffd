"""A minimal OpenAI Batch API for the OpenAI-kind simulated provider.

`POST /v1/files` (multipart, `purpose=batch`) stores an input file, `POST /v1/batches` starts a
batch of `/v1/chat/completions` lines, `GET /v1/batches/{id}` reports it and
`GET /v1/files/{id}/content` returns an input, output or error file. A batch runs in the
background: each line goes through the same planning and answer shape as a chat completion
(`OpenAIWire.completion`, so usage looks exactly as it does there), `batch_line_ms` apart,
and its result lands in the output file (2xx) or the error file (anything else), in OpenAI's
record shape. `batch_fault` makes the provider refuse to create batches (`refuse`) or fail
them after they started (`fail`). State lives in memory, for the life of the server.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from tokenway.sim.engine import SimBadRequest
from tokenway.sim.server import SimError, json_response

if TYPE_CHECKING:
    from tokenway.sim.wire_openai import OpenAIWire

__all__ = ["BatchAPI"]

_CHAT = "/v1/chat/completions"


def _form(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart/form-data body: name -> (filename, bytes)."""
    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + raw)
    fields: dict[str, tuple[str | None, bytes]] = {}
    if not msg.is_multipart():
        return fields
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


class BatchAPI:
    """The Batch API routes of one OpenAI-kind `SimServer` (through its `wire`)."""

    def __init__(self, wire: OpenAIWire) -> None:
        self.wire = wire
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lines_run = 0
        """How many batch lines this server has answered (tests compare it with chat calls)."""
        self._running: set[asyncio.Task[None]] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/files", self.upload),
            web.get("/v1/files/{file_id}/content", self.content),
            web.post("/v1/batches", self.create),
            web.get("/v1/batches/{batch_id}", self.retrieve),
        ]

    def _put(self, purpose: str, filename: str, content: bytes) -> dict[str, Any]:
        file_id = "file-" + secrets.token_hex(12)
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "expires_at": None,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        self.files[file_id] = obj
        self.contents[file_id] = content
        return obj

    async def upload(self, request: web.Request) -> web.StreamResponse:
        fields = _form(request.headers.get("Content-Type", ""), self.wire.server.raw(request))
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if purpose != "batch":
            raise SimError(400, "The simulator stores files for batches only.", param="purpose")
        filename, content = fields.get("file", (None, b""))
        if not content or filename is None:
            raise SimError(400, "'file' is required.", param="file")
        return json_response(self._put("batch", filename, content))

    async def content(self, request: web.Request) -> web.StreamResponse:
        found = self.contents.get(request.match_info["file_id"])
        if found is None:
            raise SimError(404, "No such File object.", param="file_id")
        return web.Response(body=found, content_type="application/octet-stream")

    async def create(self, request: web.Request) -> web.StreamResponse:
        body = self.wire.server.body(request)
        file_id = body.get("input_file_id")
        if body.get("endpoint") != _CHAT:
            raise SimError(400, f"The simulator batches {_CHAT} only.", param="endpoint")
        if not isinstance(file_id, str) or file_id not in self.contents:
            raise SimError(404, "No such File object.", param="input_file_id")
        if self.wire.server.scenario.batch_fault == "refuse":
            raise SimError(500, "Simulated failure to create a batch.")
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": "batch_" + secrets.token_hex(12),
            "object": "batch",
            "endpoint": _CHAT,
            "errors": None,
            "input_file_id": file_id,
            "completion_window": body.get("completion_window", "24h"),
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": now,
            "expires_at": now + 86400,
            "completed_at": None,
            "failed_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self.batches[batch["id"]] = batch
        task = asyncio.create_task(self._run(batch, self.contents[file_id]))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return json_response(batch)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        found = self.batches.get(request.match_info["batch_id"])
        if found is None:
            raise SimError(404, "No such batch.", param="batch_id")
        return json_response(found)

    async def _run(self, batch: dict[str, Any], content: bytes) -> None:
        scenario = self.wire.server.scenario
        lines = [x for x in content.splitlines() if x.strip()]
        counts = batch["request_counts"]
        counts["total"] = len(lines)
        if scenario.batch_fault == "fail":
            await asyncio.sleep(scenario.batch_line_ms / 1000)
            batch["status"] = "failed"
            batch["failed_at"] = int(time.time())
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "simulated_failure", "message": "Simulated batch failure."}],
            }
            return
        outputs: list[bytes] = []
        errors: list[bytes] = []
        for raw in lines:
            await asyncio.sleep(scenario.batch_line_ms / 1000)
            record = self._line(raw)
            ok = record["response"] is not None and record["response"]["status_code"] == 200
            (outputs if ok else errors).append(msgspec.json.encode(record))
            counts["completed" if ok else "failed"] += 1
        if outputs:
            batch["output_file_id"] = self._put(
                "batch_output", "output.jsonl", b"".join(r + b"\n" for r in outputs)
            )["id"]
        if errors:
            batch["error_file_id"] = self._put(
                "batch_output", "errors.jsonl", b"".join(r + b"\n" for r in errors)
            )["id"]
        batch["status"] = "completed"
        batch["completed_at"] = int(time.time())

    def _line(self, raw: bytes) -> dict[str, Any]:
        """One line's output or error record."""
        from tokenway.sim.wire_openai import parse_chat  # imported here: it imports this module

        record: dict[str, Any] = {"id": "batch_req_" + secrets.token_hex(12), "error": None}
        request_id = "req_" + secrets.token_hex(16)
        try:
            line = msgspec.json.decode(raw)
            record["custom_id"] = line.get("custom_id")
            body = line.get("body")
            if not isinstance(body, dict):
                raise SimBadRequest("'body' must be an object", "body")
            ask = parse_chat(body)
        except (SimBadRequest, msgspec.DecodeError, AttributeError) as exc:
            message = getattr(exc, "message", "The line is not a valid request.")
            error = {"message": message, "type": "invalid_request_error", "param": None}
            record["response"] = {
                "status_code": 400,
                "request_id": request_id,
                "body": {"error": {**error, "code": None}},
            }
            record.setdefault("custom_id", None)
            return record
        server = self.wire.server
        plan = server.plan(ask)
        plan.commit(server.cache)
        self.lines_run += 1
        base = {
            "id": "chatcmpl-" + plan.uid,
            "created": int(time.time()),
            "model": ask.model,
            "service_tier": "default",
            "system_fingerprint": "fp_sim" + plan.uid[:6],
        }
        body_out = self.wire.completion(plan, base)
        record["response"] = {"status_code": 200, "request_id": request_id, "body": body_out}
        return record
