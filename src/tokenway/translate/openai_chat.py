"""OpenAI chat completions <-> canonical types.

The whole API of this protocol: `parse_request` validates a client body, `encode_request` writes
an upstream body; responses, usage and streams come from `openai_response` and are re-exported
here, so callers use one module per protocol.

Extended reasoning travels as `reasoning_content` (the DeepSeek / vLLM convention), the only
place an OpenAI-shaped body can carry it; thinking signatures have no OpenAI form and are dropped.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokenway.domain.types import (
    Block,
    ChatRequest,
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolChoice,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tokenway.errors import BadRequest
from tokenway.translate._fields import fail, get_bool, get_num, get_pos_int, get_str, unsupported
from tokenway.translate.openai_response import (
    StreamDecoder,
    StreamEncoder,
    encode_response,
    encode_usage,
    parse_response,
    parse_usage,
)

__all__ = [
    "StreamDecoder",
    "StreamEncoder",
    "encode_request",
    "encode_response",
    "encode_usage",
    "parse_request",
    "parse_response",
    "parse_usage",
]

_KNOWN_FIELDS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "n", "stop", "tools", "tool_choice", "parallel_tool_calls", "response_format",
        "reasoning_effort", "stream", "user",
    }
)  # fmt: skip
# Extras with the same meaning in every OpenAI-compatible server; anything else in `extras` came
# from another client API (encode_request only runs across protocols) and is not forwarded.
_FORWARD_EXTRAS = (
    "seed", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs",
    "prediction", "modalities", "audio", "verbosity", "prompt_cache_key", "safety_identifier",
    "web_search_options", "store",
)  # fmt: skip
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode


# ---- requests -------------------------------------------------------------------------------


def _text_parts(content: Any, path: str) -> list[TextBlock]:
    """Content that may only hold text: a string or a list of text parts."""
    if isinstance(content, str):
        return [TextBlock(text=content)]
    if not isinstance(content, list):
        raise fail("must be a string or a list of content parts", path)
    out = []
    for i, part in enumerate(content):
        p = f"{path}[{i}]"
        if not isinstance(part, dict) or part.get("type") != "text":
            raise fail("must be a text content part", p)
        out.append(TextBlock(text=get_str(part, "text", f"{p}.text", required=True) or ""))
    return out


def _image(part: dict[str, Any], path: str) -> ImageBlock:
    spec = part.get("image_url")
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, dict):
        raise fail("must be an object with a url", f"{path}.image_url")
    url = get_str(spec, "url", f"{path}.image_url.url", required=True) or ""
    detail = get_str(spec, "detail", f"{path}.image_url.detail")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise fail("data URL must look like data:<type>;base64,<data>", f"{path}.image_url.url")
        return ImageBlock(media_type=media_type, data=data, detail=detail)
    return ImageBlock(url=url, detail=detail)


def _user_content(content: Any, path: str) -> list[Block]:
    if isinstance(content, str):
        return [TextBlock(text=content)]
    if not isinstance(content, list):
        raise fail("must be a string or a list of content parts", path)
    out: list[Block] = []
    for i, part in enumerate(content):
        p = f"{path}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(kind, str):
            raise fail("must be an object with a type", p)
        if kind == "text":
            out.append(TextBlock(text=get_str(part, "text", f"{p}.text", required=True) or ""))
        elif kind == "image_url":
            out.append(_image(part, p))
        else:
            raise unsupported(f"content part type {kind!r} is not supported", f"{p}.type")
    return out


def _tool_calls(calls: Any, path: str) -> list[Block]:
    if not isinstance(calls, list):
        raise fail("must be a list", path)
    out: list[Block] = []
    for i, call in enumerate(calls):
        p = f"{path}[{i}]"
        if not isinstance(call, dict):
            raise fail("must be an object", p)
        if call.get("type", "function") != "function":
            raise unsupported("only function tool calls are supported", f"{p}.type")
        fn = call.get("function")
        if not isinstance(fn, dict):
            raise fail("is required", f"{p}.function")
        args = get_str(fn, "arguments", f"{p}.function.arguments") or "{}"
        try:
            parsed = _json_decode(args) if args.strip() else {}
        except msgspec.DecodeError:
            raise fail("is not valid JSON", f"{p}.function.arguments") from None
        except RecursionError:  # the string is small enough, its nesting is not
            raise fail("is nested too deeply", f"{p}.function.arguments") from None
        if not isinstance(parsed, dict):
            raise fail("must encode a JSON object", f"{p}.function.arguments")
        out.append(
            ToolUseBlock(
                id=get_str(call, "id", f"{p}.id", required=True) or "",
                name=get_str(fn, "name", f"{p}.function.name", required=True) or "",
                input=parsed,
            )
        )
    return out


def _message(msg: Any, path: str, req_system: list[TextBlock]) -> Message | None:
    if not isinstance(msg, dict):
        raise fail("must be an object", path)
    role = get_str(msg, "role", f"{path}.role", required=True)
    content = msg.get("content")
    if role in ("system", "developer"):
        req_system.extend(_text_parts(content, f"{path}.content"))
        return None
    if role == "user":
        if content is None:
            raise fail("is required", f"{path}.content")
        return Message(role="user", content=_user_content(content, f"{path}.content"))
    if role == "tool":
        call_id = get_str(msg, "tool_call_id", f"{path}.tool_call_id", required=True) or ""
        if content is None:
            raise fail("is required", f"{path}.content")
        parts: list[TextBlock | ImageBlock] = list(_text_parts(content, f"{path}.content"))
        return Message(role="user", content=[ToolResultBlock(tool_use_id=call_id, content=parts)])
    if role == "assistant":
        blocks: list[Block] = []
        reasoning = get_str(msg, "reasoning_content", f"{path}.reasoning_content")
        if reasoning:
            blocks.append(ThinkingBlock(thinking=reasoning))
        if content is not None:
            if isinstance(content, list):
                # Assistant parts may be text or refusal; a refusal is plain text to the model.
                content = [
                    {"type": "text", "text": p.get("refusal")}
                    if isinstance(p, dict) and p.get("type") == "refusal"
                    else p
                    for p in content
                ]
            blocks.extend(_text_parts(content, f"{path}.content"))
        if msg.get("tool_calls") is not None:
            blocks.extend(_tool_calls(msg["tool_calls"], f"{path}.tool_calls"))
        if content is None and msg.get("tool_calls") is None:
            raise fail("assistant message needs content or tool_calls", f"{path}.content")
        return Message(role="assistant", content=blocks)
    raise fail(f"unknown role {role!r}", f"{path}.role")


def _tools(tools: Any) -> list[ToolSpec]:
    if not isinstance(tools, list):
        raise fail("must be a list", "tools")
    out = []
    for i, t in enumerate(tools):
        p = f"tools[{i}]"
        if not isinstance(t, dict):
            raise fail("must be an object", p)
        if t.get("type", "function") != "function":
            raise unsupported(f"tool type {t.get('type')!r} is not supported", f"{p}.type")
        fn = t.get("function")
        if not isinstance(fn, dict):
            raise fail("is required", f"{p}.function")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise fail("must be an object", f"{p}.function.parameters")
        spec = ToolSpec(
            name=get_str(fn, "name", f"{p}.function.name", required=True) or "",
            description=get_str(fn, "description", f"{p}.function.description"),
        )
        if params is not None:
            spec.parameters = params
        out.append(spec)
    return out


def _tool_choice(tc: Any) -> ToolChoice:
    if tc in ("auto", "none", "required"):
        return ToolChoice(mode=tc)
    if isinstance(tc, dict) and tc.get("type") == "function":
        fn = tc.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return ToolChoice(mode="tool", name=fn["name"])
        raise fail("must name a function", "tool_choice.function.name")
    raise fail(
        'must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
        "tool_choice",
    )


def parse_request(body: dict[str, Any]) -> ChatRequest:
    """Validate an OpenAI chat completions request body and return it in canonical form.

    Raises `BadRequest` naming the offending field (`param`) on any problem. Fields this module
    does not know are kept in `ChatRequest.extras`.
    """
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = get_str(body, "model", "model", required=True) or ""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise fail("is required and must be a non-empty list", "messages")
    system: list[TextBlock] = []
    messages = [m for i, raw in enumerate(msgs) if (m := _message(raw, f"messages[{i}]", system))]
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported("only n=1 is supported", "n")
    max_tokens = get_pos_int(body, "max_completion_tokens", "max_completion_tokens") or get_pos_int(
        body, "max_tokens", "max_tokens"
    )
    stop = body.get("stop")
    if isinstance(stop, str):
        stops = [stop]
    elif stop is None:
        stops = []
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = stop
    else:
        raise fail("must be a string or a list of strings", "stop")
    tool_choice = _tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else None
    if get_bool(body, "parallel_tool_calls", "parallel_tool_calls") is False:
        tool_choice = tool_choice or ToolChoice()
        tool_choice.disable_parallel = True
    rf = body.get("response_format")
    if rf is not None and (not isinstance(rf, dict) or not isinstance(rf.get("type"), str)):
        raise fail("must be an object with a type", "response_format")
    if rf is not None and rf["type"] not in ("text", "json_object", "json_schema"):
        raise fail(f"unknown type {rf['type']!r}", "response_format.type")
    extras = {k: v for k, v in body.items() if k not in _KNOWN_FIELDS}
    so = extras.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise fail("must be an object", "stream_options")
    return ChatRequest(
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=get_num(body, "temperature", "temperature"),
        top_p=get_num(body, "top_p", "top_p"),
        stop=stops,
        tools=_tools(body["tools"]) if body.get("tools") is not None else [],
        tool_choice=tool_choice,
        response_format=rf if rf is not None and rf["type"] != "text" else None,
        reasoning_effort=get_str(body, "reasoning_effort", "reasoning_effort"),
        stream=bool(get_bool(body, "stream", "stream")),
        user=get_str(body, "user", "user"),
        extras=extras,
    )


def _content_value(texts: list[str]) -> str | list[dict[str, Any]]:
    if len(texts) == 1:
        return texts[0]
    return [{"type": "text", "text": t} for t in texts]


def _image_part(b: ImageBlock) -> dict[str, Any]:
    url = b.url if b.url is not None else f"data:{b.media_type};base64,{b.data}"
    spec: dict[str, Any] = {"url": url}
    if b.detail:
        spec["detail"] = b.detail
    return {"type": "image_url", "image_url": spec}


def _encode_user(m: Message, out: list[dict[str, Any]]) -> None:
    parts: list[dict[str, Any]] = []
    for b in m.content:
        if isinstance(b, ToolResultBlock):
            texts = [c.text for c in b.content if isinstance(c, TextBlock)]
            if b.is_error:
                texts = ["Error: " + (texts[0] if texts else ""), *texts[1:]]
            # OpenAI tool messages hold text only: images of a result follow as a user message.
            parts.extend(_image_part(c) for c in b.content if isinstance(c, ImageBlock))
            out.append(
                {"role": "tool", "tool_call_id": b.tool_use_id, "content": _content_value(texts)}
                if texts
                else {"role": "tool", "tool_call_id": b.tool_use_id, "content": ""}
            )
        elif isinstance(b, TextBlock):
            parts.append({"type": "text", "text": b.text})
        elif isinstance(b, ImageBlock):
            parts.append(_image_part(b))
    if not parts:
        return
    if all(p["type"] == "text" for p in parts):
        out.append({"role": "user", "content": _content_value([p["text"] for p in parts])})
    else:
        out.append({"role": "user", "content": parts})


def _encode_assistant(m: Message) -> dict[str, Any]:
    texts = [b.text for b in m.content if isinstance(b, TextBlock)]
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": _json_encode(b.input).decode()},
        }
        for b in m.content
        if isinstance(b, ToolUseBlock)
    ]
    msg: dict[str, Any] = {"role": "assistant", "content": _content_value(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def encode_request(
    req: ChatRequest, model: str, *, legacy_max_tokens: bool = False
) -> dict[str, Any]:
    """Body for an OpenAI-compatible upstream, with `model` as the model name.

    Thinking blocks are not sent back (OpenAI-compatible servers reject or ignore them). With
    `legacy_max_tokens` the limit goes out as `max_tokens` for servers that predate
    `max_completion_tokens`.
    """
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": _content_value([b.text for b in req.system])})
    for m in req.messages:
        if m.role == "user":
            _encode_user(m, messages)
        else:
            messages.append(_encode_assistant(m))
    body: dict[str, Any] = {"model": model, "messages": messages}
    if req.max_tokens is not None:
        body["max_tokens" if legacy_max_tokens else "max_completion_tokens"] = req.max_tokens
    for key in ("temperature", "top_p", "response_format", "user"):
        if (v := getattr(req, key)) is not None:
            body[key] = v
    if req.stop:
        body["stop"] = req.stop
    if req.reasoning_effort is not None:
        effort = "xhigh" if req.reasoning_effort == "max" else req.reasoning_effort
        if effort in _EFFORTS:
            body["reasoning_effort"] = effort
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                },
            }
            for t in req.tools
        ]
        tc = req.tool_choice
        if tc is not None:
            if tc.mode == "tool":
                body["tool_choice"] = {"type": "function", "function": {"name": tc.name}}
            else:
                body["tool_choice"] = tc.mode
            if tc.disable_parallel:
                body["parallel_tool_calls"] = False
    for key in _FORWARD_EXTRAS:
        if key in req.extras:
            body[key] = req.extras[key]
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body
