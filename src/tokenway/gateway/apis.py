"""The client-facing chat APIs: how each parses requests, encodes answers and shapes errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal
from typing import Protocol as TypingProtocol

import msgspec

from tokenway.domain.types import ChatRequest, ChatResponse
from tokenway.errors import TokenwayError
from tokenway.translate import anthropic_messages, openai_chat

_encode = msgspec.json.encode
# `responses` is the OpenAI Responses API: no provider kind's own, but OpenAI-kind upstreams
# with `responses: true` speak it too (`Upstream.native`).
Protocol = Literal["openai", "anthropic", "responses"]


class Relay(TypingProtocol):
    """How a client API adjusts what it relays untranslated from an upstream of its own protocol
    (without one, the upstream's bytes pass as they came)."""

    def whole(self, data: bytes) -> bytes:
        """A whole answer."""
        ...

    def frame(self, raw: bytes, doc: dict[str, Any] | None) -> bytes:
        """One stream frame (`doc` is its JSON data)."""
        ...

    def error(self, message: str) -> bytes:
        """The frames that end a stream the upstream broke off."""
        ...


def openai_error(err: TokenwayError) -> bytes:
    return _encode(
        {
            "error": {
                "message": err.message,
                "type": err.error_type,
                "param": err.param,
                "code": err.code,
            }
        }
    )


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(err: TokenwayError) -> bytes:
    etype = _ANTHROPIC_TYPES.get(err.status, "api_error")
    return _encode({"type": "error", "error": {"type": etype, "message": err.message}})


class ClientApi(msgspec.Struct, frozen=True):
    """One client API. `protocol` is the wire protocol an upstream must speak for passthrough."""

    label: str
    protocol: Protocol
    parse_request: Callable[[dict[str, Any]], ChatRequest]
    encode_response: Callable[[ChatResponse, str], dict[str, Any]]
    stream_encoder: Callable[..., Any]
    error_body: Callable[[TokenwayError], bytes]
    # request headers forwarded to an upstream of the same protocol (an allowlist: a client
    # must not pick, say, the OpenAI organisation the operator's key bills)
    forward_headers: frozenset[bytes]
    relay: Relay | None = None


OPENAI_CHAT = ClientApi(
    label="openai.chat",
    protocol="openai",
    parse_request=openai_chat.parse_request,
    encode_response=openai_chat.encode_response,
    stream_encoder=openai_chat.StreamEncoder,
    error_body=openai_error,
    forward_headers=frozenset({b"openai-beta"}),
)

ANTHROPIC_MESSAGES = ClientApi(
    label="anthropic.messages",
    protocol="anthropic",
    parse_request=anthropic_messages.parse_request,
    encode_response=anthropic_messages.encode_response,
    stream_encoder=anthropic_messages.StreamEncoder,
    error_body=anthropic_error,
    forward_headers=frozenset({b"anthropic-beta", b"anthropic-version"}),
)
