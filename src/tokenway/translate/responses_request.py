"""OpenAI Responses API requests (`POST /v1/responses`) -> canonical types.

`parse_request` validates a `CreateResponse` body: its input items are normalised and turned
into canonical messages by `responses_items`, its other fields (instructions, function tools
and tool choice, text format, reasoning effort, output limit, sampling, metadata, user) map
onto the canonical request, and the fields every Response object repeats are kept as its
`echo`. `to_chat` puts the stored conversation of `previous_response_id` before the input.

Hosted tools (web search, file search, computer use, ...), background responses, stored
prompts and the Conversations API have no canonical form and are refused with a message that
says so; unknown fields are ignored, as newer SDKs add options freely.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokenway.domain.types import ChatRequest, TextBlock, ToolChoice, ToolSpec
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
from tokenway.translate.responses_items import (
    REDACTED_MARK,
    SIGNATURE_MARK,
    input_items,
    new_id,
    normalise_item,
    to_messages,
)

__all__ = [
    "EFFORTS",
    "REDACTED_MARK",
    "SIGNATURE_MARK",
    "ResponsesRequest",
    "new_id",
    "normalise_item",
    "parse_request",
    "to_chat",
]

JSON = dict[str, Any]

EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
MIN_OUTPUT_TOKENS = 16  # the API's own floor for max_output_tokens

_HOSTED_TOOLS = {
    "web_search": "web search",
    "web_search_preview": "web search",
    "web_search_2025_08_26": "web search",
    "web_search_preview_2025_03_11": "web search",
    "file_search": "file search",
    "computer_use_preview": "computer use",
    "computer_use": "computer use",
    "code_interpreter": "code interpreter",
    "image_generation": "image generation",
    "mcp": "remote MCP",
    "local_shell": "local shell",
    "shell": "shell",
    "apply_patch": "apply patch",
    "custom": "custom (free-form)",
}
# Known fields tokenway cannot serve (anything unknown is ignored).
_UNSUPPORTED_FIELDS = {
    "background": "background responses are not supported; omit background or set it false",
    "conversation": "the Conversations API is not supported; use previous_response_id",
    "prompt": "stored prompt templates are not supported; send instructions and input",
}
_METADATA_KEYS, _METADATA_KEY_LEN, _METADATA_VALUE_LEN = 16, 64, 512
# `user` and `metadata` become the ledger row's end user and tags, and PostgreSQL text cannot
# hold U+0000: such a row would be dropped, leaving the request unbilled.
_NUL = "\x00"


class ResponsesRequest(msgspec.Struct, kw_only=True):
    """A validated `CreateResponse` body.

    `chat` is the canonical request for this body's own input (no history applied); `items` its
    input items, normalised and with ids; `echo` the request fields every Response object
    repeats (instructions, tools, text format, sampling, metadata, ...).
    """

    chat: ChatRequest
    items: list[JSON]
    echo: JSON
    instructions: str | None = None
    store: bool = True
    previous_response_id: str | None = None


def to_chat(req: ResponsesRequest, history: list[JSON] | None = None) -> ChatRequest:
    """The canonical request: `history` (earlier input and output items) then this input."""
    if not history:
        return req.chat
    system = [TextBlock(text=req.instructions)] if req.instructions else []
    messages = to_messages([*history, *req.items], system)
    return msgspec.structs.replace(req.chat, messages=messages, system=system)


# ---- request fields -------------------------------------------------------------------------


def _tools(raw: Any) -> tuple[list[ToolSpec], list[JSON]]:
    if not isinstance(raw, list):
        raise fail("must be a list", "tools")
    specs, echo = [], []
    for i, t in enumerate(raw):
        p = f"tools[{i}]"
        if not isinstance(t, dict):
            raise fail("must be an object", p)
        kind = t.get("type")
        if kind != "function":
            what = _HOSTED_TOOLS.get(kind) if isinstance(kind, str) else None
            if what is None:
                raise fail(f"unknown tool type {kind!r}", f"{p}.type")
            raise unsupported(
                f"{what} tools ({kind!r}) are not supported: tokenway serves function tools "
                "only, on every provider",
                f"{p}.type",
            )
        name = get_str(t, "name", f"{p}.name", required=True) or ""
        params = get_dict(t, "parameters", f"{p}.parameters")
        strict = get_bool(t, "strict", f"{p}.strict")
        spec = ToolSpec(name=name, description=get_str(t, "description", f"{p}.description"))
        if params is not None:
            spec.parameters = params
        specs.append(spec)
        echo.append(
            {
                "type": "function",
                "name": name,
                "description": spec.description,
                "parameters": params,
                "strict": strict,
            }
        )
    return specs, echo


def _tool_choice(tc: Any) -> ToolChoice:
    if tc in ("auto", "none", "required"):
        return ToolChoice(mode=tc)
    if isinstance(tc, dict):
        kind = tc.get("type")
        if kind == "function":
            name = get_str(tc, "name", "tool_choice.name", required=True)
            return ToolChoice(mode="tool", name=name)
        if isinstance(kind, str) and (kind in _HOSTED_TOOLS or kind == "allowed_tools"):
            raise unsupported(f"tool_choice of type {kind!r} is not supported", "tool_choice.type")
    raise fail(
        'must be "auto", "none", "required" or {"type": "function", "name": ...}', "tool_choice"
    )


def _text_format(text: JSON) -> tuple[JSON | None, JSON]:
    """The canonical `response_format` (chat shape) and the echoed `text.format`."""
    fmt = get_dict(text, "format", "text.format")
    if fmt is None:
        return None, {"type": "text"}
    kind = fmt.get("type")
    if kind == "text":
        return None, {"type": "text"}
    if kind == "json_object":
        return {"type": "json_object"}, {"type": "json_object"}
    if kind == "json_schema":
        name = get_str(fmt, "name", "text.format.name", required=True) or ""
        schema = get_dict(fmt, "schema", "text.format.schema")
        if schema is None:
            raise fail("is required", "text.format.schema")
        spec: JSON = {"name": name, "schema": schema}
        desc = get_str(fmt, "description", "text.format.description")
        strict = get_bool(fmt, "strict", "text.format.strict")
        if desc is not None:
            spec["description"] = desc
        if strict is not None:
            spec["strict"] = strict
        return {"type": "json_schema", "json_schema": spec}, {"type": "json_schema", **spec}
    raise fail(
        f"unknown type {kind!r}; expected 'text', 'json_object' or 'json_schema'",
        "text.format.type",
    )


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise fail("must be an object of strings", "metadata")
    if len(raw) > _METADATA_KEYS:
        raise fail(f"may hold at most {_METADATA_KEYS} keys", "metadata")
    for k, v in raw.items():
        if len(k) > _METADATA_KEY_LEN:
            raise fail(f"keys may be at most {_METADATA_KEY_LEN} characters", "metadata")
        if not isinstance(v, str) or len(v) > _METADATA_VALUE_LEN:
            raise fail(
                f"values must be strings of at most {_METADATA_VALUE_LEN} characters",
                f"metadata.{k}",
            )
        if _NUL in k or _NUL in v:
            raise fail("keys and values must not contain NUL (U+0000) characters", "metadata")
    return dict(raw)


def _ranged(body: JSON, key: str, top: float) -> float | None:
    v = get_num(body, key, key)
    if v is not None and not 0 <= v <= top:
        raise fail(f"must be between 0 and {top:g}, got {v:g}", key)
    return v


def _reasoning_effort(body: JSON) -> tuple[str | None, JSON | None]:
    reasoning = get_dict(body, "reasoning", "reasoning")
    if reasoning is None:
        return None, None
    effort = get_str(reasoning, "effort", "reasoning.effort")
    if effort is not None and effort not in EFFORTS:
        raise fail(
            f"unknown effort {effort!r}; expected one of {', '.join(sorted(EFFORTS))}",
            "reasoning.effort",
        )
    summary = reasoning.get("summary", reasoning.get("generate_summary"))
    return effort, {"effort": effort, "summary": summary if isinstance(summary, str) else None}


def parse_request(body: JSON) -> ResponsesRequest:
    """Validate a `CreateResponse` body; `BadRequest` (or `Unsupported`) names the bad field."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = get_str(body, "model", "model", required=True) or ""
    if not model:
        raise fail("must be a non-empty string", "model")
    for key, why in _UNSUPPORTED_FIELDS.items():
        if body.get(key) not in (None, False):
            raise unsupported(why, key)
    if "input" not in body or body["input"] is None:
        raise fail("is required", "input")
    items = input_items(body["input"])
    instructions = get_str(body, "instructions", "instructions")
    system = [TextBlock(text=instructions)] if instructions else []
    messages = to_messages(items, system)

    specs, tools_echo = _tools(body["tools"]) if body.get("tools") is not None else ([], [])
    tc_raw = body.get("tool_choice")
    tool_choice = _tool_choice(tc_raw) if tc_raw is not None else None
    parallel = get_bool(body, "parallel_tool_calls", "parallel_tool_calls")
    if parallel is False:
        tool_choice = tool_choice or ToolChoice()
        tool_choice.disable_parallel = True
    text = get_dict(body, "text", "text") or {}
    response_format, format_echo = _text_format(text)
    verbosity = get_str(text, "verbosity", "text.verbosity")
    effort, reasoning_echo = _reasoning_effort(body)
    max_out = get_pos_int(body, "max_output_tokens", "max_output_tokens")
    if max_out is not None and max_out < MIN_OUTPUT_TOKENS:
        raise fail(f"must be at least {MIN_OUTPUT_TOKENS}, got {max_out}", "max_output_tokens")
    temperature = _ranged(body, "temperature", 2.0)
    top_p = _ranged(body, "top_p", 1.0)
    metadata = _metadata(body.get("metadata"))
    user = get_str(body, "user", "user")
    if user is not None and _NUL in user:
        raise fail("must not contain NUL (U+0000) characters", "user")
    store = get_bool(body, "store", "store")
    previous = get_str(body, "previous_response_id", "previous_response_id")
    include = get_list(body, "include", "include") or []
    if not all(isinstance(x, str) for x in include):
        raise fail("must be a list of strings", "include")
    truncation = get_str(body, "truncation", "truncation") or "disabled"
    if truncation not in ("auto", "disabled"):
        raise fail(
            f"unknown truncation {truncation!r}; expected 'auto' or 'disabled'", "truncation"
        )
    max_tool_calls = get_pos_int(body, "max_tool_calls", "max_tool_calls")

    # Only fields every OpenAI-compatible server reads alike: never `store` (a chat upstream
    # must not keep what the client asked tokenway to keep or not).
    extras: JSON = {}
    for key in ("prompt_cache_key", "safety_identifier"):
        if (v := get_str(body, key, key)) is not None:
            extras[key] = v
    if verbosity is not None:
        extras["verbosity"] = verbosity
    chat = ChatRequest(
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_out,
        temperature=temperature,
        top_p=top_p,
        tools=specs,
        tool_choice=tool_choice,
        response_format=response_format,
        reasoning_effort=effort,
        stream=bool(get_bool(body, "stream", "stream")),
        user=user,
        extras=extras,
    )
    text_echo: JSON = {"format": format_echo}
    if verbosity is not None:
        text_echo["verbosity"] = verbosity
    echo: JSON = {
        "instructions": instructions,
        "max_output_tokens": max_out,
        "max_tool_calls": max_tool_calls,
        "metadata": metadata,
        "parallel_tool_calls": parallel is not False,
        "previous_response_id": previous,
        "reasoning": reasoning_echo or {"effort": None, "summary": None},
        "store": store is not False,
        "temperature": 1.0 if temperature is None else temperature,
        "text": text_echo,
        "tool_choice": tc_raw if tc_raw is not None else "auto",
        "tools": tools_echo,
        "top_p": 1.0 if top_p is None else top_p,
        "truncation": truncation,
        "user": user,
        "safety_identifier": extras.get("safety_identifier"),
        "prompt_cache_key": extras.get("prompt_cache_key"),
    }
    return ResponsesRequest(
        chat=chat,
        items=items,
        echo=echo,
        instructions=instructions,
        store=store is not False,
        previous_response_id=previous,
    )
