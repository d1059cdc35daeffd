"""Anthropic Messages <-> canonical types.

The whole API of this protocol: `parse_request` validates a client body, `encode_request` writes
an upstream body; responses, usage and streams come from `anthropic_response` and are re-exported
here, so callers use one module per protocol.

Anthropic has no JSON mode: a JSON `response_format` becomes a system instruction. Reasoning
effort becomes an extended-thinking budget.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tokenway.domain.types import (
    Block,
    ChatRequest,
    ImageBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolChoice,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tokenway.errors import BadRequest
from tokenway.translate._fields import (
    fail,
    get_bool,
    get_dict,
    get_list,
    get_num,
    get_pos_int,
    get_str,
    unsupported,
)
from tokenway.translate.anthropic_response import (
    StreamDecoder,
    StreamEncoder,
    encode_response,
    encode_usage,
    parse_response,
    parse_usage,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "EFFORT_BUDGETS",
    "StreamDecoder",
    "StreamEncoder",
    "encode_request",
    "encode_response",
    "encode_usage",
    "parse_request",
    "parse_response",
    "parse_usage",
]

DEFAULT_MAX_TOKENS = 4096
"""`max_tokens` sent upstream when the client gave none (Anthropic requires one)."""
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
"""Thinking budget for an OpenAI-style `reasoning_effort`."""
_MIN_BUDGET = 1024  # Anthropic refuses smaller thinking budgets

_KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "temperature", "top_p", "stop_sequences",
        "tools", "tool_choice", "thinking", "output_config", "stream", "metadata",
    }
)  # fmt: skip
# Extras with the same meaning in every Anthropic upstream (see openai_chat for why so few).
_FORWARD_EXTRAS = ("top_k",)
_CUSTOM_TOOL_TYPES = (None, "custom")
_ROLES: dict[str, Literal["user", "assistant"]] = {"user": "user", "assistant": "assistant"}

_json_encode = msgspec.json.encode


# ---- requests -------------------------------------------------------------------------------


def _cache(obj: dict[str, Any], path: str) -> dict[str, Any] | None:
    return get_dict(obj, "cache_control", f"{path}.cache_control")


def _text(block: dict[str, Any], path: str) -> TextBlock:
    text = get_str(block, "text", f"{path}.text", required=True) or ""
    return TextBlock(text=text, cache_control=_cache(block, path))


def _image(block: dict[str, Any], path: str) -> ImageBlock:
    src = block.get("source")
    p = f"{path}.source"
    if not isinstance(src, dict):
        raise fail("is required and must be an object", p)
    kind = src.get("type")
    cache = _cache(block, path)
    if kind == "base64":
        return ImageBlock(
            media_type=get_str(src, "media_type", f"{p}.media_type", required=True),
            data=get_str(src, "data", f"{p}.data", required=True),
            cache_control=cache,
        )
    if kind == "url":
        return ImageBlock(url=get_str(src, "url", f"{p}.url", required=True), cache_control=cache)
    raise fail(f'must be "base64" or "url", got {kind!r}', f"{p}.type")


def _tool_result(block: dict[str, Any], path: str) -> ToolResultBlock:
    content = block.get("content")
    parts: list[TextBlock | ImageBlock] = []
    if isinstance(content, str):
        parts.append(TextBlock(text=content))
    elif isinstance(content, list):
        for i, c in enumerate(content):
            p = f"{path}.content[{i}]"
            kind = c.get("type") if isinstance(c, dict) else None
            if kind == "text":
                parts.append(_text(c, p))
            elif kind == "image":
                parts.append(_image(c, p))
            else:
                raise fail("must be a text or image block", p)
    elif content is not None:
        raise fail("must be a string or a list of blocks", f"{path}.content")
    return ToolResultBlock(
        tool_use_id=get_str(block, "tool_use_id", f"{path}.tool_use_id", required=True) or "",
        content=parts,
        is_error=bool(get_bool(block, "is_error", f"{path}.is_error")),
        cache_control=_cache(block, path),
    )


def _block(block: Any, path: str, role: str) -> Block:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(block, dict) or not isinstance(kind, str):
        raise fail("must be an object with a type", path)
    if kind == "text":
        return _text(block, path)
    if kind == "image":
        return _image(block, path)
    if kind == "tool_use" and role == "assistant":
        inp = block.get("input")
        if not isinstance(inp, dict):
            raise fail("must be an object", f"{path}.input")
        return ToolUseBlock(
            id=get_str(block, "id", f"{path}.id", required=True) or "",
            name=get_str(block, "name", f"{path}.name", required=True) or "",
            input=inp,
            cache_control=_cache(block, path),
        )
    if kind == "tool_result" and role == "user":
        return _tool_result(block, path)
    if kind == "thinking" and role == "assistant":
        return ThinkingBlock(
            thinking=get_str(block, "thinking", f"{path}.thinking", required=True) or "",
            signature=get_str(block, "signature", f"{path}.signature"),
        )
    if kind == "redacted_thinking" and role == "assistant":
        return RedactedThinkingBlock(
            data=get_str(block, "data", f"{path}.data", required=True) or ""
        )
    if kind in ("tool_use", "tool_result", "thinking", "redacted_thinking"):
        raise fail(f"{kind} blocks are not allowed in a {role} message", f"{path}.type")
    raise unsupported(f"content block type {kind!r} is not supported", f"{path}.type")


def _message(msg: Any, path: str) -> Message:
    if not isinstance(msg, dict):
        raise fail("must be an object", path)
    raw_role = get_str(msg, "role", f"{path}.role", required=True)
    role = _ROLES.get(raw_role or "")
    if role is None:
        raise fail(f'unknown role {raw_role!r} (must be "user" or "assistant")', f"{path}.role")
    content = msg.get("content")
    if isinstance(content, str):
        return Message(role=role, content=[TextBlock(text=content)])
    if not isinstance(content, list):
        raise fail("is required and must be a string or a list of blocks", f"{path}.content")
    blocks = [_block(b, f"{path}.content[{i}]", role) for i, b in enumerate(content)]
    return Message(role=role, content=blocks)


def _system(system: Any) -> list[TextBlock]:
    if system is None:
        return []
    if isinstance(system, str):
        return [TextBlock(text=system)]
    if not isinstance(system, list):
        raise fail("must be a string or a list of text blocks", "system")
    out = []
    for i, b in enumerate(system):
        if not isinstance(b, dict) or b.get("type") != "text":
            raise fail("must be a text block", f"system[{i}]")
        out.append(_text(b, f"system[{i}]"))
    return out


def _tools(tools: list[Any]) -> list[ToolSpec]:
    out = []
    for i, t in enumerate(tools):
        p = f"tools[{i}]"
        if not isinstance(t, dict):
            raise fail("must be an object", p)
        if t.get("type") not in _CUSTOM_TOOL_TYPES:
            raise unsupported(f"tool type {t.get('type')!r} is not supported", f"{p}.type")
        schema = get_dict(t, "input_schema", f"{p}.input_schema")
        if schema is None:
            raise fail("is required", f"{p}.input_schema")
        out.append(
            ToolSpec(
                name=get_str(t, "name", f"{p}.name", required=True) or "",
                description=get_str(t, "description", f"{p}.description"),
                parameters=schema,
                cache_control=_cache(t, p),
            )
        )
    return out


def _tool_choice(tc: dict[str, Any]) -> ToolChoice:
    kind = tc.get("type")
    no_par = bool(
        get_bool(tc, "disable_parallel_tool_use", "tool_choice.disable_parallel_tool_use")
    )
    if kind in ("auto", "none"):
        return ToolChoice(mode=kind, disable_parallel=no_par)
    if kind == "any":
        return ToolChoice(mode="required", disable_parallel=no_par)
    if kind == "tool":
        name = get_str(tc, "name", "tool_choice.name", required=True)
        return ToolChoice(mode="tool", name=name, disable_parallel=no_par)
    raise fail(f'must be "auto", "any", "tool" or "none", got {kind!r}', "tool_choice.type")


def parse_request(body: dict[str, Any]) -> ChatRequest:
    """Validate an Anthropic Messages request body and return it in canonical form.

    Raises `BadRequest` naming the offending field (`param`) on any problem. Fields this module
    does not know are kept in `ChatRequest.extras`, as is a `thinking` config other than
    enabled/disabled (it has no canonical meaning).
    """
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = get_str(body, "model", "model", required=True) or ""
    max_tokens = get_pos_int(body, "max_tokens", "max_tokens")
    if max_tokens is None:
        raise fail("is required", "max_tokens")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise fail("is required and must be a non-empty list", "messages")
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(msgs)]
    stops = get_list(body, "stop_sequences", "stop_sequences") or []
    if not all(isinstance(s, str) for s in stops):
        raise fail("must be a list of strings", "stop_sequences")
    extras = {k: v for k, v in body.items() if k not in _KNOWN_FIELDS}
    budget = None
    thinking = get_dict(body, "thinking", "thinking")
    if thinking is not None:
        kind = thinking.get("type")
        if kind == "enabled":
            budget = get_pos_int(thinking, "budget_tokens", "thinking.budget_tokens")
            if budget is None:
                raise fail("is required when thinking is enabled", "thinking.budget_tokens")
        elif kind != "disabled":
            if not isinstance(kind, str):
                raise fail("is required", "thinking.type")
            extras["thinking"] = thinking
    effort, response_format = None, None
    output = get_dict(body, "output_config", "output_config")
    if output is not None:
        effort = get_str(output, "effort", "output_config.effort")
        fmt = get_dict(output, "format", "output_config.format")
        if fmt is not None:
            schema = get_dict(fmt, "schema", "output_config.format.schema")
            if fmt.get("type") != "json_schema" or schema is None:
                raise fail("must be {type: json_schema, schema: {...}}", "output_config.format")
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema},
            }
    user = None
    metadata = get_dict(body, "metadata", "metadata")
    if metadata is not None:
        user = get_str(metadata, "user_id", "metadata.user_id")
    tc = get_dict(body, "tool_choice", "tool_choice")
    return ChatRequest(
        model=model,
        messages=messages,
        system=_system(body.get("system")),
        max_tokens=max_tokens,
        temperature=get_num(body, "temperature", "temperature"),
        top_p=get_num(body, "top_p", "top_p"),
        stop=stops,
        tools=_tools(get_list(body, "tools", "tools") or []),
        tool_choice=_tool_choice(tc) if tc is not None else None,
        response_format=response_format,
        reasoning_effort=effort,
        thinking_budget=budget,
        stream=bool(get_bool(body, "stream", "stream")),
        user=user,
        extras=extras,
    )


# ---- encoding -------------------------------------------------------------------------------


def _with_cache(out: dict[str, Any], cache: dict[str, Any] | None) -> dict[str, Any]:
    if cache is not None:
        out["cache_control"] = cache
    return out


def _encode_image(b: ImageBlock) -> dict[str, Any]:
    if b.url is not None:
        source: dict[str, Any] = {"type": "url", "url": b.url}
    else:
        source = {"type": "base64", "media_type": b.media_type, "data": b.data}
    return _with_cache({"type": "image", "source": source}, b.cache_control)


def _encode_block(b: Block) -> dict[str, Any] | None:
    """One content block, or None for a block Anthropic would refuse."""
    if isinstance(b, TextBlock):
        # Anthropic rejects empty and whitespace-only text blocks.
        if not b.text.strip():
            return None
        return _with_cache({"type": "text", "text": b.text}, b.cache_control)
    if isinstance(b, ImageBlock):
        return _encode_image(b)
    if isinstance(b, ToolUseBlock):
        out: dict[str, Any] = {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
        return _with_cache(out, b.cache_control)
    if isinstance(b, ToolResultBlock):
        content = [
            _encode_image(c) if isinstance(c, ImageBlock) else {"type": "text", "text": c.text}
            for c in b.content
            if isinstance(c, ImageBlock) or c.text
        ]
        res: dict[str, Any] = {"type": "tool_result", "tool_use_id": b.tool_use_id}
        res["content"] = content
        if b.is_error:
            res["is_error"] = True
        return _with_cache(res, b.cache_control)
    if isinstance(b, ThinkingBlock):
        # Only Anthropic-signed thinking can go back to Anthropic: unsigned thinking came from
        # another provider, and Gemini's signatures (tagged "gemini") would be refused.
        if not b.signature or b.signature.startswith("gemini"):
            return None
        return {"type": "thinking", "thinking": b.thinking, "signature": b.signature}
    return {"type": "redacted_thinking", "data": b.data}


def _encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        blocks = [e for b in m.content if (e := _encode_block(b)) is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == m.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": m.role, "content": blocks})
    for wire in out:
        if wire["role"] == "user":
            # Tool results must open the user turn that answers the tool calls.
            wire["content"].sort(key=lambda b: b["type"] != "tool_result")
    return out


def _json_instruction(rf: dict[str, Any]) -> str | None:
    kind = rf.get("type")
    if kind == "json_object":
        return "Respond with a single valid JSON object and nothing else."
    if kind == "json_schema":
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        text = "Respond with a single valid JSON value and nothing else"
        if schema is not None:
            return f"{text}. It must conform to this JSON Schema: {_json_encode(schema).decode()}"
        return text + "."
    return None


def _budget(req: ChatRequest) -> int | None:
    if req.thinking_budget is not None:
        return max(req.thinking_budget, _MIN_BUDGET)
    if req.reasoning_effort is not None:
        if req.reasoning_effort == "max":
            return EFFORT_BUDGETS["xhigh"]
        return EFFORT_BUDGETS.get(req.reasoning_effort)
    return None


def encode_request(req: ChatRequest, model: str) -> dict[str, Any]:
    """Body for an Anthropic upstream, with `model` as the model name.

    `max_tokens` defaults to 4096 (raised to fit a thinking budget); consecutive same-role
    messages are merged; blocks Anthropic would refuse (blank text, unsigned thinking) are left
    out; a JSON `response_format` becomes a system instruction.
    """
    system = [_with_cache({"type": "text", "text": b.text}, b.cache_control) for b in req.system]
    if req.response_format is not None and (note := _json_instruction(req.response_format)):
        system.append({"type": "text", "text": note})
    budget = _budget(req)
    max_tokens = req.max_tokens
    if budget is not None:
        if max_tokens is None:
            max_tokens = max(DEFAULT_MAX_TOKENS, budget + DEFAULT_MAX_TOKENS)
        elif max_tokens <= _MIN_BUDGET:
            budget = None  # no room for the smallest budget Anthropic accepts: answer plainly
        else:
            budget = min(budget, max_tokens - 1)  # the budget must stay below max_tokens
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
        "messages": _encode_messages(req.messages),
    }
    if system:
        body["system"] = system
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    else:
        # Anthropic refuses temperature and top_p changes while thinking, so send them only here.
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)  # OpenAI allows up to 2, Anthropic 1
        if req.top_p is not None:
            body["top_p"] = req.top_p
        for key in _FORWARD_EXTRAS:
            if key in req.extras:
                body[key] = req.extras[key]
    if req.stop:
        body["stop_sequences"] = req.stop
    if req.tools:
        body["tools"] = [
            _with_cache(
                {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "input_schema": t.parameters,
                },
                t.cache_control,
            )
            for t in req.tools
        ]
        tc = req.tool_choice
        if tc is not None:
            choice: dict[str, Any] = {"type": "any" if tc.mode == "required" else tc.mode}
            if tc.mode == "tool":
                choice["name"] = tc.name
            if tc.disable_parallel and tc.mode != "none":
                choice["disable_parallel_tool_use"] = True
            body["tool_choice"] = choice
    if req.user is not None:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    return body
