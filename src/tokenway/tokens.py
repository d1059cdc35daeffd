"""Offline token counting, for estimates where a provider reports no usage.

Counts use OpenAI's o200k_base encoding from `bpe_openai`, which ships its ranks inside the
package (tiktoken would download them at first use). For other model families the count is an
estimate, good enough for admission (reserve at the worst case) and for embeddings usage that a
provider does not report.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import msgspec

from tokenway.domain.types import (
    Block,
    ChatRequest,
    ChatResponse,
    ImageBlock,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

IMAGE_TOKENS = 85
"""Flat cost of one image: OpenAI's price for a low-detail image, a floor for the others."""

MESSAGE_OVERHEAD = 4
"""Per message: the role and the separators chat templates put around each turn."""

REQUEST_OVERHEAD = 3
"""Per request: the tokens that prime the assistant's reply."""

TOOL_OVERHEAD = 8
"""Per tool definition: the wrapper a provider puts around each function declaration."""

# The tokenizer refuses pieces of more than 200k tokens; a character is at most 4 tokens
# (one per UTF-8 byte), so 40k-character pieces always fit.
_PIECE_CHARS = 40_000


@functools.cache
def _encoder() -> Any:
    # bpe_openai reads its bundled ranks (at import and at first use) with the deprecated
    # importlib.resources.open_binary.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding("o200k_base")


def count_text(text: str) -> int:
    """Tokens of `text` in o200k_base. Special-token markup counts as ordinary text."""
    if not text:
        return 0
    enc = _encoder()
    if len(text) <= _PIECE_CHARS:
        return len(enc.encode_ordinary(text))
    total = 0
    start = 0
    while start < len(text):
        end = min(start + _PIECE_CHARS, len(text))
        if end < len(text):
            # Cut at whitespace so no word is split in two (which would add a token).
            cut = text.rfind(" ", start + _PIECE_CHARS // 2, end)
            end = cut if cut > start else end
        total += len(enc.encode_ordinary(text[start:end]))
        start = end
    return total


def _json_tokens(value: Any) -> int:
    return count_text(msgspec.json.encode(value).decode())


def _block_tokens(block: Block) -> int:
    if isinstance(block, TextBlock):
        return count_text(block.text)
    if isinstance(block, ImageBlock):
        return IMAGE_TOKENS
    if isinstance(block, ToolUseBlock):
        return count_text(block.name) + _json_tokens(block.input)
    if isinstance(block, ToolResultBlock):
        return sum(_block_tokens(b) for b in block.content)
    if isinstance(block, ThinkingBlock):
        return count_text(block.thinking)
    if isinstance(block, RedactedThinkingBlock):
        # Opaque base64; providers bill the hidden thinking, roughly a token per 4 bytes.
        return len(block.data) * 3 // 16
    return 0


def count_request(req: ChatRequest) -> int:
    """Estimated prompt tokens of a request: system, messages, and tool definitions.

    Adds `MESSAGE_OVERHEAD` per message (the system prompt counts as one), `TOOL_OVERHEAD` per
    tool and `REQUEST_OVERHEAD` once; images count `IMAGE_TOKENS` each.
    """
    total = REQUEST_OVERHEAD
    if req.system:
        total += MESSAGE_OVERHEAD + sum(count_text(b.text) for b in req.system)
    for msg in req.messages:
        total += MESSAGE_OVERHEAD + sum(_block_tokens(b) for b in msg.content)
    for tool in req.tools:
        total += TOOL_OVERHEAD + count_text(tool.name) + _json_tokens(tool.parameters)
        if tool.description:
            total += count_text(tool.description)
    if req.response_format and req.response_format.get("type") == "json_schema":
        total += _json_tokens(req.response_format.get("json_schema"))
    return total


def count_response(resp: ChatResponse) -> int:
    """Estimated output tokens of a response: text, thinking and tool calls."""
    return sum(_block_tokens(b) for b in resp.content)
