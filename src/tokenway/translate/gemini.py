"""Google Gemini `generateContent` / `streamGenerateContent?alt=sse` (v1beta), upstream side.

Pure functions between Gemini wire JSON and the canonical types.

Thought signatures. Gemini returns an opaque `thoughtSignature` on thought parts and on
function calls, and Gemini 3 rejects a history whose function calls lost theirs. Canonically a
signature rides on a `ThinkingBlock`, tagged so it can be told apart from other providers':
`gemini:<sig>` is the signature of the thought text in that block, and an empty block signed
`gemini-call:<sig>` carries the signature of the function call right after it. Text parts'
signatures (optional for Gemini) are dropped. On the way back, foreign and unsigned thinking is
dropped; a function call of a model turn that has no signature at all gets Google's documented
sentinel for histories made elsewhere, on Gemini 3 and later.
"""

from __future__ import annotations

import json
import mimetypes
import re
import secrets
from typing import Any

from tokenway.domain.types import (
    JSON,
    Block,
    ChatRequest,
    ChatResponse,
    ImageBlock,
    Message,
    StopReason,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCallStart,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from tokenway.domain.types import (
    BlockStop as BlockStopEvent,
)
from tokenway.errors import BadRequest, UpstreamStatus, UpstreamStreamCut
from tokenway.translate.gemini_schema import clean_schema

SIGNATURE_PREFIX = "gemini:"
CALL_SIGNATURE_PREFIX = "gemini-call:"
SKIP_SIGNATURE = "skip_thought_signature_validator"

# Budgets for OpenAI-style effort levels: Gemini 2.5 Pro needs at least 128, Flash tops at 24576.
EFFORT_BUDGETS = {"none": 0, "minimal": 128, "low": 1024, "medium": 8192, "high": 24576}

_FINISH: dict[str, StopReason] = {
    "STOP": "end_turn",
    "MAX_TOKENS": "max_tokens",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "BLOCKLIST": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
    "TOO_MANY_TOOL_CALLS": "error",
}

_VERSION = re.compile(r"gemini-(\d+)")
_DATA_URL = re.compile(r"^data:([^;,]+)?(?:;[^,]*)?;base64,(.*)$", re.DOTALL)
_API_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{20,}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")


def is_gemini_signature(signature: str | None) -> bool:
    """Whether a canonical thinking signature came from a Gemini upstream."""
    return signature is not None and (
        signature.startswith(SIGNATURE_PREFIX) or signature.startswith(CALL_SIGNATURE_PREFIX)
    )


def _new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


# ---- JSON schema -> Gemini Schema --------------------------------------------------------------


def _image_part(block: ImageBlock) -> JSON | None:
    if block.data:
        return {"inlineData": {"mimeType": block.media_type or "image/png", "data": block.data}}
    if not block.url:
        return None
    m = _DATA_URL.match(block.url)
    if m:
        return {"inlineData": {"mimeType": m.group(1) or "image/png", "data": m.group(2)}}
    file: JSON = {"fileUri": block.url}
    mime = block.media_type or mimetypes.guess_type(block.url.split("?", 1)[0])[0]
    if mime:
        file["mimeType"] = mime
    return {"fileData": file}


def _tool_result_parts(block: ToolResultBlock, name: str) -> list[JSON]:
    text = "".join(b.text for b in block.content if isinstance(b, TextBlock))
    key = "error" if block.is_error else "output"
    parts: list[JSON] = [{"functionResponse": {"name": name, "response": {key: text}}}]
    for b in block.content:
        if isinstance(b, ImageBlock) and (img := _image_part(b)) is not None:
            parts.append(img)
    return parts


def _needs_call_signature(model: str) -> bool:
    m = _VERSION.search(model)
    return m is None or int(m.group(1)) >= 3


def _encode_message(msg: Message, names: dict[str, str], sign_calls: bool) -> list[JSON]:
    parts: list[JSON] = []
    pending_sig: str | None = None
    for block in msg.content:
        if isinstance(block, TextBlock):
            if block.text:
                parts.append({"text": block.text})
        elif isinstance(block, ImageBlock):
            if (img := _image_part(block)) is not None:
                parts.append(img)
        elif isinstance(block, ToolUseBlock):
            part: JSON = {"functionCall": {"name": block.name, "args": block.input}}
            if pending_sig:
                part["thoughtSignature"] = pending_sig
            parts.append(part)
        elif isinstance(block, ToolResultBlock):
            name = names.get(block.tool_use_id)
            if name is None:
                raise BadRequest(
                    f"tool result for unknown tool call id {block.tool_use_id!r}",
                    param="messages",
                )
            parts.extend(_tool_result_parts(block, name))
        elif isinstance(block, ThinkingBlock) and block.signature:
            sig = block.signature
            if sig.startswith(SIGNATURE_PREFIX):
                parts.append(
                    {
                        "text": block.thinking,
                        "thought": True,
                        "thoughtSignature": sig[len(SIGNATURE_PREFIX) :],
                    }
                )
            elif sig.startswith(CALL_SIGNATURE_PREFIX):
                pending_sig = sig[len(CALL_SIGNATURE_PREFIX) :]
                continue
        # Foreign or unsigned thinking and redacted thinking are not sent: Gemini can't use them.
        pending_sig = None
    if sign_calls and msg.role == "assistant":
        calls = [p for p in parts if "functionCall" in p]
        if calls and not any("thoughtSignature" in p for p in calls):
            calls[0]["thoughtSignature"] = SKIP_SIGNATURE
    return parts


def _encode_contents(req: ChatRequest, model: str) -> list[JSON]:
    names = {b.id: b.name for m in req.messages for b in m.content if isinstance(b, ToolUseBlock)}
    sign_calls = _needs_call_signature(model)
    contents: list[JSON] = []
    for msg in req.messages:
        parts = _encode_message(msg, names, sign_calls)
        if not parts:
            continue
        role = "model" if msg.role == "assistant" else "user"
        # Gemini wants all responses to one model turn's parallel calls in a single content.
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _encode_tool(tool: ToolSpec) -> JSON:
    decl: JSON = {"name": tool.name}
    if tool.description:
        decl["description"] = tool.description
    params = clean_schema(tool.parameters)
    # Gemini rejects an OBJECT schema with no properties: a function without arguments
    # is declared without `parameters`.
    if params.get("properties") or params.get("type") not in (None, "object", "OBJECT"):
        decl["parameters"] = params
    return decl


def _thinking_config(req: ChatRequest) -> JSON | None:
    if req.thinking_budget is not None:
        budget = max(0, req.thinking_budget)
        cfg: JSON = {"thinkingBudget": budget}
        if budget > 0:
            # Only Anthropic-style clients ask for a budget, and they expect thinking blocks.
            cfg["includeThoughts"] = True
        return cfg
    if req.reasoning_effort is not None:
        effort = EFFORT_BUDGETS.get(req.reasoning_effort.lower())
        if effort is None:
            raise BadRequest(
                f"unsupported reasoning_effort {req.reasoning_effort!r}", param="reasoning_effort"
            )
        return {"thinkingBudget": effort}
    return None


def _generation_config(req: ChatRequest) -> JSON:
    gen: JSON = {}
    if req.max_tokens is not None:
        gen["maxOutputTokens"] = req.max_tokens
    if req.temperature is not None:
        gen["temperature"] = req.temperature
    if req.top_p is not None:
        gen["topP"] = req.top_p
    if req.stop:
        gen["stopSequences"] = list(req.stop)
    fmt = req.response_format or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        gen["responseMimeType"] = "application/json"
        spec = fmt.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            gen["responseSchema"] = clean_schema(spec["schema"])
    if (thinking := _thinking_config(req)) is not None:
        gen["thinkingConfig"] = thinking
    return gen


def encode_request(req: ChatRequest, model: str) -> dict[str, Any]:
    """A `GenerateContentRequest` body for `req` (the model goes in the URL, not the body)."""
    body: JSON = {"contents": _encode_contents(req, model)}
    system = "\n\n".join(b.text for b in req.system if b.text)
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_encode_tool(t) for t in req.tools]}]
    choice = req.tool_choice
    if choice is not None and (req.tools or choice.mode == "none"):
        fcc: JSON = {"mode": {"auto": "AUTO", "none": "NONE"}.get(choice.mode, "ANY")}
        if choice.mode == "tool" and choice.name:
            fcc["allowedFunctionNames"] = [choice.name]
        body["toolConfig"] = {"functionCallingConfig": fcc}
    gen = _generation_config(req)
    if gen:
        body["generationConfig"] = gen
    return body


# ---- usage and response ----------------------------------------------------------------------


def _count(u: dict[str, Any], key: str) -> int:
    v = u.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return 0
    return max(0, int(v))


def parse_usage(u: dict[str, Any]) -> Usage:
    """Normalise a `usageMetadata` object.

    `promptTokenCount` already includes cached tokens; tool-use prompt tokens are billed as
    input on top of it; thoughts are billed as output.
    """
    prompt = _count(u, "promptTokenCount") + _count(u, "toolUsePromptTokenCount")
    thoughts = _count(u, "thoughtsTokenCount")
    return Usage(
        input_tokens=prompt,
        cache_read_tokens=min(_count(u, "cachedContentTokenCount"), prompt),
        output_tokens=_count(u, "candidatesTokenCount") + thoughts,
        reasoning_tokens=thoughts,
    )


def _first_candidate(body: dict[str, Any]) -> JSON:
    cands = body.get("candidates")
    if isinstance(cands, list) and cands and isinstance(cands[0], dict):
        return cands[0]
    return {}


def _parts(cand: JSON) -> list[JSON]:
    content = cand.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _stop_reason(finish: Any, has_calls: bool, blocked: bool) -> StopReason:
    if has_calls and finish in (None, "STOP"):
        return "tool_use"
    if finish is None and blocked:
        return "content_filter"
    return _FINISH.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def _call_block(fc: JSON) -> ToolUseBlock:
    args = fc.get("args")
    call_id = fc.get("id")
    return ToolUseBlock(
        id=call_id if isinstance(call_id, str) and call_id else _new_call_id(),
        name=str(fc.get("name") or ""),
        input=args if isinstance(args, dict) else {},
    )


def _signature(part: JSON) -> str | None:
    sig = part.get("thoughtSignature")
    return sig if isinstance(sig, str) and sig else None


def parse_response(body: dict[str, Any], model: str) -> ChatResponse:
    """A canonical response from a `GenerateContentResponse`."""
    cand = _first_candidate(body)
    blocks: list[Block] = []
    for part in _parts(cand):
        sig = _signature(part)
        fc = part.get("functionCall")
        if isinstance(fc, dict):
            if sig:
                blocks.append(ThinkingBlock(thinking="", signature=CALL_SIGNATURE_PREFIX + sig))
            blocks.append(_call_block(fc))
            continue
        text = part.get("text")
        if not isinstance(text, str):
            continue
        last = blocks[-1] if blocks else None
        if part.get("thought") is True:
            signature = SIGNATURE_PREFIX + sig if sig else None
            if isinstance(last, ThinkingBlock) and last.signature is None:
                last.thinking += text
                last.signature = signature
            else:
                blocks.append(ThinkingBlock(thinking=text, signature=signature))
        elif text:
            if isinstance(last, TextBlock):
                last.text += text
            else:
                blocks.append(TextBlock(text=text))
    has_calls = any(isinstance(b, ToolUseBlock) for b in blocks)
    feedback = body.get("promptFeedback")
    blocked = isinstance(feedback, dict) and bool(feedback.get("blockReason"))
    meta = body.get("usageMetadata")
    rid = body.get("responseId")
    return ChatResponse(
        id=rid if isinstance(rid, str) and rid else "gen-" + secrets.token_hex(12),
        model=model,
        content=blocks,
        stop_reason=_stop_reason(cand.get("finishReason"), has_calls, blocked),
        usage=parse_usage(meta if isinstance(meta, dict) else {}),
    )


# ---- streaming -------------------------------------------------------------------------------


class StreamDecoder:
    """Decodes `streamGenerateContent?alt=sse` frames into canonical stream events.

    Gemini sends whole parts per frame: consecutive text parts (and thought parts) grow one
    block; each function call is complete in its frame.
    """

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._finished = False
        self._index = -1
        self._open: str | None = None  # "text" | "thinking" | None
        self._open_signed = False
        self._finish: Any = None
        self._blocked = False
        self._has_calls = False

    def _start(self, data: dict[str, Any], out: list[StreamEvent]) -> None:
        if not self._started:
            self._started = True
            rid = data.get("responseId")
            rid = rid if isinstance(rid, str) and rid else "gen-" + secrets.token_hex(12)
            out.append(StreamStart(id=rid, model=self._model))

    def _close(self, out: list[StreamEvent]) -> None:
        if self._open is not None:
            out.append(BlockStopEvent(index=self._index))
            self._open = None

    def _open_block(self, kind: str, out: list[StreamEvent]) -> int:
        if self._open != kind or (kind == "thinking" and self._open_signed):
            self._close(out)
            self._index += 1
            self._open = kind
            self._open_signed = False
        return self._index

    def _part(self, part: JSON, out: list[StreamEvent]) -> None:
        sig = _signature(part)
        fc = part.get("functionCall")
        if isinstance(fc, dict):
            self._close(out)
            if sig:
                self._index += 1
                out.append(ThinkingDelta(index=self._index, signature=CALL_SIGNATURE_PREFIX + sig))
                out.append(BlockStopEvent(index=self._index))
            call = _call_block(fc)
            self._index += 1
            out.append(ToolCallStart(index=self._index, id=call.id, name=call.name))
            out.append(ToolArgsDelta(index=self._index, partial_json=json.dumps(call.input)))
            out.append(BlockStopEvent(index=self._index))
            self._has_calls = True
            return
        text = part.get("text")
        if not isinstance(text, str):
            return
        if part.get("thought") is True:
            if not text and not sig:
                return
            idx = self._open_block("thinking", out)
            if text:
                out.append(ThinkingDelta(index=idx, text=text))
            if sig:
                out.append(ThinkingDelta(index=idx, signature=SIGNATURE_PREFIX + sig))
                self._open_signed = True
        elif text:
            out.append(TextDelta(index=self._open_block("text", out), text=text))

    def feed(self, event: str | None, data: dict[str, Any]) -> list[StreamEvent]:
        """Events for one SSE data frame (a partial `GenerateContentResponse`)."""
        out: list[StreamEvent] = []
        err = data.get("error")
        if isinstance(err, dict):
            message = error_message(data)
            if self._started:
                raise UpstreamStreamCut(message)
            code = err.get("code")
            raise UpstreamStatus(code if isinstance(code, int) else 500, message)
        self._start(data, out)
        cand = _first_candidate(data)
        for part in _parts(cand):
            self._part(part, out)
        finish = cand.get("finishReason")
        if isinstance(finish, str):
            self._finish = finish
        feedback = data.get("promptFeedback")
        if isinstance(feedback, dict) and feedback.get("blockReason"):
            self._blocked = True
        meta = data.get("usageMetadata")
        if isinstance(meta, dict):
            out.append(UsageUpdate(usage=parse_usage(meta)))
        return out

    def finish(self) -> list[StreamEvent]:
        """Events closing the stream: the open block's stop and `StreamEnd`. Idempotent."""
        if self._finished:
            return []
        self._finished = True
        out: list[StreamEvent] = []
        self._start({}, out)
        self._close(out)
        out.append(
            StreamEnd(stop_reason=_stop_reason(self._finish, self._has_calls, self._blocked))
        )
        return out


# ---- errors ----------------------------------------------------------------------------------


def _error_obj(body: Any) -> JSON | None:
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return err
    return None


def error_message(body: Any) -> str:
    """The message of a Gemini error body (`{"error": {"code", "message", "status"}}`).

    Anything that looks like a Google API key is redacted.
    """
    err = _error_obj(body)
    msg: Any = None
    if err is not None:
        msg = err.get("message") or err.get("status")
    elif isinstance(body, dict):
        msg = body.get("message")
    if not isinstance(msg, str) or not msg:
        return "upstream error"
    return _API_KEY.sub("[redacted]", msg)


def retry_delay_s(body: Any) -> float | None:
    """Seconds from a `google.rpc.RetryInfo` detail (`"retryDelay": "12s"`), if any."""
    err = _error_obj(body)
    details = err.get("details") if err is not None else None
    if not isinstance(details, list):
        return None
    for d in details:
        if not isinstance(d, dict) or not str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            continue
        delay = d.get("retryDelay")
        m = _DURATION.match(delay) if isinstance(delay, str) else None
        if m:
            return float(m.group(1))
    return None
