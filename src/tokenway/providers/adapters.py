"""One adapter per wire protocol: how to ask an upstream and how to read its answer.

An adapter builds the HTTP request for a chat or embedding call and knows the parsers of its
protocol (usage, full response, stream decoder). It does no I/O: `providers.upstream` sends.

When the client speaks the upstream's own protocol, `raw` (the client's body) is forwarded with
only the model rewritten; otherwise the canonical request is encoded for the upstream. An
upstream may speak more than its kind's protocol (`native_adapters`): an OpenAI-kind upstream
with `responses: true` also takes Responses API bodies (`ResponsesAdapter`), relayed the same
way.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

import msgspec

from tokenway.config.schema import ProviderConfig, ProviderKind
from tokenway.domain.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamEvent,
    Usage,
)
from tokenway.errors import BadRequest
from tokenway.tokens import count_text
from tokenway.translate import (
    anthropic_messages,
    embeddings,
    gemini,
    openai_chat,
    responses_upstream,
)

JSON = dict[str, Any]
_encode = msgspec.json.encode


class Prepared(msgspec.Struct):
    """An HTTP request ready to send (without credentials, which `Upstream` adds)."""

    url: str
    headers: dict[str, str]
    body: bytes


class Decoder(Protocol):
    def feed(self, event: str | None, data: JSON) -> list[StreamEvent]: ...

    def finish(self) -> list[StreamEvent]: ...


class Native(Protocol):
    """What relaying a client's own protocol needs of an upstream: the request (`raw` is the
    client's body), and the usage and stream events of the answer, whose bytes pass through."""

    def chat(
        self, req: ChatRequest, raw: JSON | None, model: str, headers: dict[str, str]
    ) -> Prepared: ...

    def parse_usage(self, doc: JSON) -> Usage: ...

    def decoder(self, model: str) -> Decoder: ...


class Adapter(Protocol):
    kind: ProviderKind

    def chat(
        self, req: ChatRequest, raw: JSON | None, model: str, headers: dict[str, str]
    ) -> Prepared: ...

    def embed(self, req: EmbeddingRequest, raw: JSON | None, model: str) -> Prepared: ...

    def auth_headers(self, key: str) -> dict[str, str]: ...

    def parse_usage(self, doc: JSON) -> Usage:
        """Usage from a whole response document of this protocol."""
        ...

    def parse_response(self, doc: JSON, model: str) -> ChatResponse: ...

    def parse_embeddings(
        self, doc: JSON, model: str, req: EmbeddingRequest
    ) -> EmbeddingResponse: ...

    def decoder(self, model: str) -> Decoder: ...


class OpenAIAdapter:
    """OpenAI and every OpenAI-compatible service; Azure OpenAI with `azure: true`."""

    kind: ProviderKind = "openai"

    def __init__(self, cfg: ProviderConfig) -> None:
        self._base = cfg.base_url.rstrip("/")
        self._azure = cfg.azure
        if self._azure:
            # Azure's endpoint is the resource host; accept it with the SDK's "/openai" or a
            # "/v1" suffix too.
            for suffix in ("/v1", "/openai"):
                self._base = self._base.removesuffix(suffix)
        self._api_version = cfg.api_version or "2024-10-21"
        self._extra = dict(cfg.headers)

    def _url(self, model: str, path: str) -> str:
        if self._azure:
            dep = quote(model, safe="")
            return f"{self._base}/openai/deployments/{dep}/{path}?api-version={self._api_version}"
        return f"{self._base}/{path}"

    def auth_headers(self, key: str) -> dict[str, str]:
        if self._azure:
            return {"api-key": key}
        return {"authorization": f"Bearer {key}"}

    def chat(
        self, req: ChatRequest, raw: JSON | None, model: str, headers: dict[str, str]
    ) -> Prepared:
        if raw is not None:
            body = dict(raw)
            body["model"] = model
            if req.stream:
                # Ask for usage even when the client did not; the gateway strips it again.
                opts = body.get("stream_options")
                opts = dict(opts) if isinstance(opts, dict) else {}
                opts["include_usage"] = True
                body["stream_options"] = opts
        else:
            body = openai_chat.encode_request(req, model)
        hdrs = {"content-type": "application/json", **headers, **self._extra}
        return Prepared(self._url(model, "chat/completions"), hdrs, _encode(body))

    def embed(self, req: EmbeddingRequest, raw: JSON | None, model: str) -> Prepared:
        if raw is not None:
            body = dict(raw)
            body["model"] = model
        else:
            body = embeddings.encode_openai_request(req, model)
        hdrs = {"content-type": "application/json", **self._extra}
        return Prepared(self._url(model, "embeddings"), hdrs, _encode(body))

    def parse_usage(self, doc: JSON) -> Usage:
        u = doc.get("usage")
        usage = openai_chat.parse_usage(u if isinstance(u, dict) else {})
        tier = doc.get("service_tier")
        return usage if tier is None else msgspec.structs.replace(usage, service_tier=tier)

    def parse_response(self, doc: JSON, model: str) -> ChatResponse:
        return openai_chat.parse_response(doc)

    def parse_embeddings(self, doc: JSON, model: str, req: EmbeddingRequest) -> EmbeddingResponse:
        return embeddings.parse_openai_response(doc)

    def decoder(self, model: str) -> Decoder:
        return openai_chat.StreamDecoder()


class AnthropicAdapter:
    """Anthropic Messages, natively."""

    kind: ProviderKind = "anthropic"
    version = "2023-06-01"

    def __init__(self, cfg: ProviderConfig) -> None:
        self._base = cfg.base_url.rstrip("/")
        self._extra = dict(cfg.headers)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def chat(
        self, req: ChatRequest, raw: JSON | None, model: str, headers: dict[str, str]
    ) -> Prepared:
        if raw is not None:
            body = dict(raw)
            body["model"] = model
        else:
            body = anthropic_messages.encode_request(req, model)
        hdrs = {
            "content-type": "application/json",
            "anthropic-version": self.version,
            **headers,
            **self._extra,
        }
        return Prepared(f"{self._base}/v1/messages", hdrs, _encode(body))

    def embed(self, req: EmbeddingRequest, raw: JSON | None, model: str) -> Prepared:
        raise BadRequest("Anthropic offers no embeddings endpoint", param="model")

    def parse_usage(self, doc: JSON) -> Usage:
        u = doc.get("usage")
        return anthropic_messages.parse_usage(u if isinstance(u, dict) else {})

    def parse_response(self, doc: JSON, model: str) -> ChatResponse:
        return anthropic_messages.parse_response(doc)

    def parse_embeddings(self, doc: JSON, model: str, req: EmbeddingRequest) -> EmbeddingResponse:
        raise BadRequest("Anthropic offers no embeddings endpoint", param="model")

    def decoder(self, model: str) -> Decoder:
        return anthropic_messages.StreamDecoder()


class GeminiAdapter:
    """Google Gemini generateContent / streamGenerateContent (SSE), natively."""

    kind: ProviderKind = "gemini"

    def __init__(self, cfg: ProviderConfig) -> None:
        self._base = cfg.base_url.rstrip("/")
        self._extra = dict(cfg.headers)

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"x-goog-api-key": key}

    def chat(
        self, req: ChatRequest, raw: JSON | None, model: str, headers: dict[str, str]
    ) -> Prepared:
        body = gemini.encode_request(req, model)
        m = quote(model, safe="")
        if req.stream:
            url = f"{self._base}/v1beta/models/{m}:streamGenerateContent?alt=sse"
        else:
            url = f"{self._base}/v1beta/models/{m}:generateContent"
        hdrs = {"content-type": "application/json", **self._extra}
        return Prepared(url, hdrs, _encode(body))

    def embed(self, req: EmbeddingRequest, raw: JSON | None, model: str) -> Prepared:
        body = embeddings.encode_gemini_request(req, model)
        url = f"{self._base}/v1beta/models/{quote(model, safe='')}:batchEmbedContents"
        return Prepared(url, {"content-type": "application/json", **self._extra}, _encode(body))

    def parse_usage(self, doc: JSON) -> Usage:
        meta = doc.get("usageMetadata")
        return gemini.parse_usage(meta if isinstance(meta, dict) else {})

    def parse_response(self, doc: JSON, model: str) -> ChatResponse:
        return gemini.parse_response(doc, model)

    def parse_embeddings(self, doc: JSON, model: str, req: EmbeddingRequest) -> EmbeddingResponse:
        tokens = sum(count_text(t) for t in req.input)
        return embeddings.parse_gemini_response(doc, model, tokens)

    def decoder(self, model: str) -> Decoder:
        return gemini.StreamDecoder(model)


class ResponsesAdapter:
    """The Responses API (`POST {base_url}/responses`) of an OpenAI-kind upstream with
    `responses: true`. It relays Responses clients' own bodies only: any other client API
    reaches the upstream as chat completions, through its `OpenAIAdapter`."""

    def __init__(self, cfg: ProviderConfig) -> None:
        self._base = cfg.base_url.rstrip("/")
        self._extra = dict(cfg.headers)

    def chat(
        self, req: ChatRequest, raw: JSON | None, model: str, headers: dict[str, str]
    ) -> Prepared:
        if raw is None:
            raise BadRequest("the Responses API relays Responses request bodies only")
        body = dict(raw)
        body["model"] = model
        # tokenway keeps the conversation (gateway/responses.py): the upstream is asked to keep
        # nothing, whatever the client asked tokenway to keep.
        body["store"] = False
        hdrs = {"content-type": "application/json", **headers, **self._extra}
        return Prepared(f"{self._base}/responses", hdrs, _encode(body))

    def parse_usage(self, doc: JSON) -> Usage:
        return responses_upstream.parse_usage(doc)

    def decoder(self, model: str) -> Decoder:
        return responses_upstream.StreamDecoder()


def native_adapters(cfg: ProviderConfig, adapter: Adapter) -> dict[str, Native]:
    """The client protocols an upstream takes as they are, by protocol name."""
    native: dict[str, Native] = {cfg.kind: adapter}
    if cfg.responses:
        native["responses"] = ResponsesAdapter(cfg)
    return native


def make_adapter(cfg: ProviderConfig) -> Adapter:
    """The adapter for a provider's wire protocol."""
    if cfg.kind == "openai":
        return OpenAIAdapter(cfg)
    if cfg.kind == "anthropic":
        return AnthropicAdapter(cfg)
    return GeminiAdapter(cfg)
