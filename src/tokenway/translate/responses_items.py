"""Responses API items: input items normalised, and items -> canonical messages.

`normalise_item` checks one input item and gives it the shape the API lists it in
(`GET /v1/responses/{id}/input_items`: typed, with an id); that is also the shape items are
stored in for `previous_response_id`. `to_messages` turns normalised items (input items, and
the output items of earlier responses) into canonical messages, so a stored conversation
replays through the same code as a fresh one.

User messages and `function_call_output` items become user turns (text, images, tool results);
assistant messages, `function_call` and `reasoning` items become assistant turns (text, tool
use, thinking); system and developer messages join the system prompt. Consecutive items of
one role share a turn. Hosted-tool items, files, audio and item references have no canonical
form and are refused with a message that says so.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from tokenway.domain.types import (
    Block,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from tokenway.translate._fields import fail, get_str, unsupported

__all__ = [
    "REDACTED_MARK",
    "SIGNATURE_MARK",
    "input_items",
    "new_id",
    "normalise_item",
    "to_messages",
]

JSON = dict[str, Any]

# Reasoning signatures travel to the client as `encrypted_content`, marked so that a blob some
# other service encrypted is never mistaken for one (it is dropped instead).
SIGNATURE_MARK = "tw.sig."
REDACTED_MARK = "tw.red."
# Items only hosted tools produce: tokenway serves function tools only.
_OUTPUT_ONLY_ITEMS = frozenset(
    {
        "web_search_call", "file_search_call", "computer_call", "computer_call_output",
        "image_generation_call", "code_interpreter_call", "local_shell_call",
        "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
        "apply_patch_call_output", "mcp_call", "mcp_list_tools", "mcp_approval_request",
        "mcp_approval_response", "custom_tool_call", "custom_tool_call_output", "compaction",
    }
)  # fmt: skip

_json_decode = msgspec.json.decode


def new_id(prefix: str) -> str:
    """An id in the API's style: a type prefix and 48 hex digits."""
    return f"{prefix}_{os.urandom(24).hex()}"


# ---- input items ------------------------------------------------------------------------


def _text_part(part: JSON, path: str, kind: str) -> JSON:
    return {"type": kind, "text": get_str(part, "text", f"{path}.text", required=True)}


def _image_part(part: JSON, path: str) -> JSON:
    if part.get("file_id") is not None:
        raise unsupported("images by file_id are not supported; send image_url", f"{path}.file_id")
    url = get_str(part, "image_url", f"{path}.image_url", required=True) or ""
    if url.startswith("data:"):
        head, sep, _ = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise fail("data URL must look like data:<type>;base64,<data>", f"{path}.image_url")
    detail = get_str(part, "detail", f"{path}.detail") or "auto"
    if detail not in ("auto", "low", "high", "original"):
        raise fail(f"unknown detail {detail!r}", f"{path}.detail")
    return {"type": "input_image", "image_url": url, "file_id": None, "detail": detail}


def _input_parts(content: Any, path: str, *, images: bool) -> list[JSON]:
    """User, system or developer content: a string or a list of input parts."""
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        raise fail("must be a string or a list of content parts", path)
    out = []
    for i, part in enumerate(content):
        p = f"{path}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str):
            raise fail("must be an object with a type", p)
        if kind == "input_text":
            out.append(_text_part(part, p, "input_text"))
        elif kind == "input_image" and images:
            out.append(_image_part(part, p))
        elif kind in ("input_file", "input_audio"):
            raise unsupported(f"{kind} parts are not supported", f"{p}.type")
        else:
            allowed = "'input_text' or 'input_image'" if images else "'input_text'"
            raise fail(f"unknown content type {kind!r}; expected {allowed}", f"{p}.type")
    return out


def _output_parts(content: Any, path: str) -> list[JSON]:
    """Assistant content: a string or a list of output_text / refusal parts."""
    if isinstance(content, str):
        return [{"type": "output_text", "text": content, "annotations": []}]
    if not isinstance(content, list):
        raise fail("must be a string or a list of content parts", path)
    out: list[JSON] = []
    for i, part in enumerate(content):
        p = f"{path}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict):
            raise fail("must be an object with a type", p)
        if kind == "output_text":
            out.append({**_text_part(part, p, "output_text"), "annotations": []})
        elif kind == "refusal":
            refusal = get_str(part, "refusal", f"{p}.refusal", required=True)
            out.append({"type": "refusal", "refusal": refusal})
        else:
            raise fail(
                f"unknown content type {kind!r}; expected 'output_text' or 'refusal'", f"{p}.type"
            )
    return out


def _message(item: JSON, path: str) -> JSON:
    role = get_str(item, "role", f"{path}.role", required=True)
    content = item.get("content")
    if content is None:
        raise fail("is required", f"{path}.content")
    if role == "assistant":
        parts = _output_parts(content, f"{path}.content")
    elif role in ("user", "system", "developer"):
        parts = _input_parts(content, f"{path}.content", images=role == "user")
    else:
        raise fail(
            f"unknown role {role!r}; expected 'user', 'assistant', 'system' or 'developer'",
            f"{path}.role",
        )
    return {
        "id": get_str(item, "id", f"{path}.id") or new_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": parts,
    }


def _arguments(item: JSON, path: str) -> str:
    args = get_str(item, "arguments", f"{path}.arguments", required=True) or ""
    try:
        parsed = _json_decode(args) if args.strip() else {}
    except msgspec.DecodeError:
        raise fail("is not valid JSON", f"{path}.arguments") from None
    except RecursionError:  # the string is small enough, its nesting is not
        raise fail("is nested too deeply", f"{path}.arguments") from None
    if not isinstance(parsed, dict):
        raise fail("must encode a JSON object", f"{path}.arguments")
    return args


def _function_call(item: JSON, path: str) -> JSON:
    return {
        "id": get_str(item, "id", f"{path}.id") or new_id("fc"),
        "type": "function_call",
        "call_id": get_str(item, "call_id", f"{path}.call_id", required=True),
        "name": get_str(item, "name", f"{path}.name", required=True),
        "arguments": _arguments(item, path),
        "status": "completed",
    }


def _function_output(item: JSON, path: str) -> JSON:
    output = item.get("output")
    if output is None:
        raise fail("is required", f"{path}.output")
    if not isinstance(output, str):
        output = _input_parts(output, f"{path}.output", images=True)
    return {
        "id": get_str(item, "id", f"{path}.id") or new_id("fco"),
        "type": "function_call_output",
        "call_id": get_str(item, "call_id", f"{path}.call_id", required=True),
        "output": output,
        "status": "completed",
    }


def _texts(parts: Any, path: str, kind: str) -> list[JSON]:
    if parts is None:
        return []
    if not isinstance(parts, list):
        raise fail("must be a list", path)
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") != kind:
            raise fail(f"must be a {kind} part", f"{path}[{i}]")
        get_str(part, "text", f"{path}[{i}].text", required=True)
    return [{"type": kind, "text": p["text"]} for p in parts]


def _reasoning(item: JSON, path: str) -> JSON:
    out: JSON = {
        "id": get_str(item, "id", f"{path}.id") or new_id("rs"),
        "type": "reasoning",
        "summary": _texts(item.get("summary", []), f"{path}.summary", "summary_text"),
    }
    content = _texts(item.get("content"), f"{path}.content", "reasoning_text")
    if content:
        out["content"] = content
    sealed = get_str(item, "encrypted_content", f"{path}.encrypted_content")
    if sealed is not None:
        out["encrypted_content"] = sealed
    return out


def normalise_item(item: Any, path: str) -> JSON:
    """One input item in its listed shape (typed, with an id); `BadRequest` when malformed."""
    if not isinstance(item, dict):
        raise fail("must be an object", path)
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"
    if kind == "message":
        return _message(item, path)
    if kind == "function_call":
        return _function_call(item, path)
    if kind == "function_call_output":
        return _function_output(item, path)
    if kind == "reasoning":
        return _reasoning(item, path)
    if kind == "item_reference":
        raise unsupported(
            "item references are not supported; send the item or use previous_response_id",
            f"{path}.type",
        )
    # a `type` that is a list or an object cannot be looked up in a set
    if isinstance(kind, str) and kind in _OUTPUT_ONLY_ITEMS:
        raise unsupported(f"{kind} items are not supported: only function tools are", path)
    raise fail(f"unknown item type {kind!r}", f"{path}.type")


def input_items(value: Any) -> list[JSON]:
    """The `input` of a request as normalised items (a string is one user message)."""
    if isinstance(value, str):
        return [_message({"role": "user", "content": value}, "input")]
    if not isinstance(value, list) or not value:
        raise fail("is required and must be a string or a non-empty list of items", "input")
    return [normalise_item(item, f"input[{i}]") for i, item in enumerate(value)]


# ---- items -> canonical ---------------------------------------------------------------------


def _image_block(part: JSON) -> ImageBlock:
    url: str = part["image_url"]
    detail = part.get("detail")
    detail = None if detail == "auto" else detail
    if url.startswith("data:"):
        head, _, data = url[5:].partition(",")
        return ImageBlock(media_type=head.partition(";")[0], data=data, detail=detail)
    return ImageBlock(url=url, detail=detail)


def _user_blocks(parts: list[JSON]) -> list[TextBlock | ImageBlock]:
    return [
        TextBlock(text=p["text"]) if p["type"] == "input_text" else _image_block(p) for p in parts
    ]


def _thinking(item: JSON) -> Block | None:
    sealed = item.get("encrypted_content")
    if isinstance(sealed, str) and sealed.startswith(REDACTED_MARK):
        return RedactedThinkingBlock(data=sealed[len(REDACTED_MARK) :])
    parts = item.get("content") or item.get("summary") or []
    text = "".join(p["text"] for p in parts)
    signature = None
    if isinstance(sealed, str) and sealed.startswith(SIGNATURE_MARK):
        signature = sealed[len(SIGNATURE_MARK) :]
    if not text and signature is None:
        return None
    return ThinkingBlock(thinking=text, signature=signature)


def _tool_input(arguments: str) -> JSON:
    if not arguments.strip():
        return {}
    try:
        parsed = _json_decode(arguments)
    except (msgspec.DecodeError, RecursionError):  # stored output items are not checked
        return {"_raw_arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def to_messages(items: list[JSON], system: list[TextBlock]) -> list[Message]:
    """Canonical messages for normalised items; system and developer text goes to `system`."""
    out: list[Message] = []

    def turn(role: Any) -> list[Block]:
        if not out or out[-1].role != role:
            out.append(Message(role=role, content=[]))
        return out[-1].content

    for item in items:
        kind = item["type"]
        if kind == "message":
            role, parts = item["role"], item["content"]
            if role in ("system", "developer"):
                system.extend(TextBlock(text=p["text"]) for p in parts)
            elif role == "user":
                turn("user").extend(_user_blocks(parts))
            else:
                turn("assistant").extend(
                    TextBlock(text=p["text"] if p["type"] == "output_text" else p["refusal"])
                    for p in parts
                )
        elif kind == "function_call":
            turn("assistant").append(
                ToolUseBlock(
                    id=item["call_id"], name=item["name"], input=_tool_input(item["arguments"])
                )
            )
        elif kind == "function_call_output":
            output = item["output"]
            content: list[TextBlock | ImageBlock] = (
                [TextBlock(text=output)] if isinstance(output, str) else _user_blocks(output)
            )
            turn("user").append(ToolResultBlock(tool_use_id=item["call_id"], content=content))
        elif kind == "reasoning" and (block := _thinking(item)) is not None:
            turn("assistant").append(block)
    return out
