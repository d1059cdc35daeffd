"""A small client of an OpenAI-kind provider's Batch API: upload an input file, create a
batch, poll it, download its files. `batch.handoff` drives it.

Failures raise `UpstreamBatchError` with the provider's status and a message that never holds
the key (the provider's own words are redacted as the gateway's upstream errors are).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tokenway.providers.upstream import Upstream
from tokenway.telemetry.log import redact

__all__ = ["UpstreamBatchClient", "UpstreamBatchError"]

_CHAT = "/v1/chat/completions"


class UpstreamBatchError(Exception):
    """A Batch API call failed (`status` 0: no answer at all)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UpstreamBatchClient:
    """Batch API calls to one provider, on a session of their own; `close` it when done."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._base = upstream.base_url.rstrip("/")
        # One key for the whole hand-off: a provider's files and batches belong to the
        # project of the key that made them, and another key of a pool may not see them.
        _, key = upstream.keys.pick()
        self._auth = upstream.adapter.auth_headers(key) if key is not None else {}
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            timeout=aiohttp.ClientTimeout(
                total=upstream.cfg.timeout_s, sock_connect=upstream.cfg.connect_timeout_s
            ),
        )

    async def close(self) -> None:
        await self._session.close()

    def _headers(self) -> dict[str, str]:
        return {**self._upstream.cfg.headers, **self._auth}

    async def _call(self, method: str, path: str, **kw: Any) -> bytes:
        try:
            async with self._session.request(
                method, self._base + path, headers=self._headers(), allow_redirects=False, **kw
            ) as resp:
                body = await resp.read()
                if resp.status >= 300:
                    raise UpstreamBatchError(resp.status, self._scrub(body))
                return body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamBatchError(0, f"{type(exc).__name__}: {exc}") from None

    def _scrub(self, body: bytes) -> str:
        text = body[:500].decode("utf-8", "replace")
        for key in self._upstream.keys.values():
            if key:
                text = text.replace(key, "[redacted]")
        return redact(text)

    async def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            doc = json.loads(await self._call(method, path, **kw))
        except ValueError:
            raise UpstreamBatchError(0, "the provider's answer is not JSON") from None
        if not isinstance(doc, dict):
            raise UpstreamBatchError(0, "the provider's answer is not a JSON object")
        return doc

    async def upload(self, content: bytes) -> str:
        """Upload a batch input file; its id."""
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename="input.jsonl", content_type="application/jsonl")
        return str((await self._json("POST", "/files", data=form))["id"])

    async def create(self, file_id: str, window: str = "24h") -> str:
        """Create a chat completions batch of an uploaded file; its id."""
        doc = {"input_file_id": file_id, "endpoint": _CHAT, "completion_window": window}
        return str((await self._json("POST", "/batches", json=doc))["id"])

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        """The upstream Batch object."""
        return await self._json("GET", f"/batches/{batch_id}")

    async def content(self, file_id: str) -> bytes:
        """A file's bytes."""
        return await self._call("GET", f"/files/{file_id}/content")
