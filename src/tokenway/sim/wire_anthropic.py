"""The Anthropic Messages wire protocol (messages, count_tokens, models)."""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tokenway.sim import text as tx
from tokenway.sim.engine import Ask, Plan, Prompt, SimBadRequest, Tool
from tokenway.sim.ratelimit import Decision, LimitSnapshot
from tokenway.sim.server import Gate, SimError, SimStream, Wire, json_response, sse

MODELS = ["claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicWire(Wire):
    """`/v1/messages`, `/v1/messages/count_tokens` and `/v1/models`."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self.messages),
            web.post("/v1/messages/count_tokens", self.count_tokens),
            web.get("/v1/models", self.models),
            web.get("/v1/models/{model}", self.model),
        ]

    def presented_key(self, request: web.Request) -> str | None:
        # Recent anthropic SDKs send the key as a bearer token rather than in x-api-key.
        key = request.headers.get("x-api-key")
        if key is None:
            auth = request.headers.get("Authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        return key

    def precheck(self, request: web.Request) -> None:
        if not request.headers.get("anthropic-version"):
            raise SimError(400, "anthropic-version: header is required")

    def common_headers(self) -> dict[str, str]:
        return {"request-id": "req_" + secrets.token_hex(12)}

    def error_response(self, err: SimError) -> web.Response:
        etype = _ERROR_TYPES.get(err.status) or ("api_error" if err.status >= 500 else None)
        headers = {}
        if err.retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(err.retry_after_s)))
        body = {
            "type": "error",
            "error": {"type": etype or "invalid_request_error", "message": err.message},
        }
        return json_response(body, status=err.status, headers=headers)

    def limit_headers(self, snap: LimitSnapshot) -> dict[str, str]:
        now = datetime.now(UTC)
        headers = {}
        if snap.rpm is not None:
            headers["anthropic-ratelimit-requests-limit"] = str(snap.rpm)
            headers["anthropic-ratelimit-requests-remaining"] = str(snap.remaining_requests)
            headers["anthropic-ratelimit-requests-reset"] = _rfc3339(now, snap.reset_requests_s)
        if snap.tpm is not None:
            headers["anthropic-ratelimit-tokens-limit"] = str(snap.tpm)
            headers["anthropic-ratelimit-tokens-remaining"] = str(snap.remaining_tokens)
            headers["anthropic-ratelimit-tokens-reset"] = _rfc3339(now, snap.reset_tokens_s)
        return headers

    def rate_limited(self, decision: Decision) -> SimError:
        what = "requests per minute" if decision.exceeded == "requests" else "tokens per minute"
        return SimError(
            429,
            f"This request would exceed the rate limit for {self.server.name} ({what}).",
            retry_after_s=decision.retry_after_s,
        )

    # ---- messages --------------------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = self.server.body(request)
        ask = parse_messages(body)
        plan = self.server.plan(ask)
        stream = bool(body.get("stream"))
        gate = await self.server.admit(request, plan.prompt_tokens + plan.output_tokens, stream)
        plan.commit(self.server.cache)
        if stream:
            return await self._stream(request, ask, plan, gate)
        await self.server.wait_whole(plan.output_tokens)
        content: list[dict[str, Any]] = []
        if plan.thinking:
            content.append(
                {
                    "type": "thinking",
                    "thinking": "".join(plan.thinking),
                    "signature": plan.signature,
                }
            )
        if plan.tool is not None:
            content.append(_tool_block(plan, plan.tool.arguments))
        elif plan.text or not plan.thinking:
            content.append({"type": "text", "text": plan.text_str})
        out = {
            "id": "msg_" + plan.uid,
            "type": "message",
            "role": "assistant",
            "model": ask.model,
            "content": content,
            "stop_reason": _stop_reason(plan),
            "stop_sequence": None,
            "usage": self.usage(plan),
        }
        return json_response(out, headers=gate.headers)

    async def _stream(
        self, request: web.Request, ask: Ask, plan: Plan, gate: Gate
    ) -> web.StreamResponse:
        stream = await self.server.open_stream(request, gate)
        start_usage = {**self.usage(plan), "output_tokens": 1}
        message: dict[str, Any] = {
            "id": "msg_" + plan.uid,
            "type": "message",
            "role": "assistant",
            "model": ask.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        await stream.send(sse({"type": "message_start", "message": message}, "message_start"))
        blocks = _Blocks(stream)
        if plan.thinking:
            await blocks.start({"type": "thinking", "thinking": "", "signature": ""})
            for piece in plan.thinking:
                await stream.pace()
                await blocks.delta({"type": "thinking_delta", "thinking": piece})
            await blocks.delta({"type": "signature_delta", "signature": plan.signature})
            await blocks.stop()
        if plan.tool is not None:
            await stream.pace()
            await blocks.start(_tool_block(plan, {}))
            pieces = tx.split_pieces(plan.tool.arguments_json, 4)
            await blocks.delta({"type": "input_json_delta", "partial_json": ""})
            for piece in pieces:
                await stream.pace(max(1, plan.tool_tokens // len(pieces)))
                await blocks.delta({"type": "input_json_delta", "partial_json": piece})
            await blocks.stop()
        elif plan.text or not plan.thinking:
            await blocks.start({"type": "text", "text": ""})
            for piece in plan.text:
                await stream.pace()
                await blocks.delta({"type": "text_delta", "text": piece})
            await blocks.stop()
        if not blocks.pinged:
            await stream.send(sse({"type": "ping"}, "ping"))
        usage = self.usage(plan)
        final_usage = {
            k: usage[k]
            for k in (
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "output_tokens",
            )
        }
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(plan), "stop_sequence": None},
            "usage": final_usage,
        }
        await stream.send(sse(delta, "message_delta"))
        await stream.send(sse({"type": "message_stop"}, "message_stop"))
        return await stream.finish()

    def usage(self, plan: Plan) -> dict[str, Any]:
        """Usage in Anthropic's shape: input_tokens excludes cache reads and writes."""
        use = plan.cache
        usage: dict[str, Any] = {
            "input_tokens": plan.prompt_tokens - use.read - use.written,
            "cache_creation_input_tokens": use.written,
            "cache_read_input_tokens": use.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": use.write_5m,
                "ephemeral_1h_input_tokens": use.write_1h,
            },
            "output_tokens": plan.output_tokens,
            "service_tier": "standard",
        }
        if plan.thinking:
            usage["output_tokens_details"] = {"thinking_tokens": plan.thinking_tokens}
        return usage

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        ask = parse_messages(self.server.body(request), count_only=True)
        return json_response({"input_tokens": len(ask.prompt.tokens)})

    async def models(self, request: web.Request) -> web.StreamResponse:
        data = [_model_json(name) for name in MODELS]
        return json_response(
            {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
        )

    async def model(self, request: web.Request) -> web.StreamResponse:
        return json_response(_model_json(request.match_info["model"]))


class _Blocks:
    """Numbers content blocks and sends the one `ping` after the first block starts."""

    def __init__(self, stream: SimStream) -> None:
        self.stream = stream
        self.index = -1
        self.pinged = False

    async def start(self, block: dict[str, Any]) -> None:
        self.index += 1
        event = {"type": "content_block_start", "index": self.index, "content_block": block}
        await self.stream.send(sse(event, "content_block_start"))
        if not self.pinged:
            self.pinged = True
            await self.stream.send(sse({"type": "ping"}, "ping"))

    async def delta(self, delta: dict[str, Any]) -> None:
        event = {"type": "content_block_delta", "index": self.index, "delta": delta}
        await self.stream.send(sse(event, "content_block_delta"))

    async def stop(self) -> None:
        event = {"type": "content_block_stop", "index": self.index}
        await self.stream.send(sse(event, "content_block_stop"))


def _rfc3339(now: datetime, seconds: float) -> str:
    return (now + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _model_json(name: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": name,
        "display_name": name,
        "created_at": "2025-01-01T00:00:00Z",
    }


def _stop_reason(plan: Plan) -> str:
    if plan.tool is not None:
        return "tool_use"
    return "max_tokens" if plan.capped else "end_turn"


def _tool_block(plan: Plan, arguments: dict[str, Any]) -> dict[str, Any]:
    assert plan.tool is not None
    return {
        "type": "tool_use",
        "id": "toolu_" + plan.tool.id,
        "name": plan.tool.name,
        "input": arguments,
    }


def parse_messages(body: dict[str, Any], count_only: bool = False) -> Ask:
    """An Anthropic Messages body as an `Ask` (raises `SimBadRequest` when malformed)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise SimBadRequest("model: Field required")
    max_tokens = body.get("max_tokens")
    if not count_only and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise SimBadRequest("max_tokens: Field required (a positive integer)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimBadRequest("messages: at least one message is required")
    prompt = Prompt()
    tools: list[Tool] = []
    raw_tools = body.get("tools") or []
    if raw_tools:
        prompt.tools_header()
        for t in raw_tools:
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise SimBadRequest("tools: each tool needs a name")
            if "input_schema" in t or "type" not in t or t.get("type") == "custom":
                tools.append(Tool(t["name"], t.get("input_schema") or {"type": "object"}))
            prompt.json({k: v for k, v in t.items() if k != "cache_control"})
            if t.get("cache_control"):
                prompt.mark(t["cache_control"])
    system = body.get("system")
    if system:
        prompt.role("system")
        _add_content(prompt, system, "system")
        prompt.end()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise SimBadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        prompt.role(msg["role"])
        _add_content(prompt, msg.get("content"), f"messages.{i}.content")
        prompt.end()
    last = messages[-1].get("content")
    after_result = isinstance(last, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last
    )
    mode, name = _tool_choice(body.get("tool_choice"))
    ask = Ask(
        model=model,
        prompt=prompt,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        tools=tools,
        tool_mode=mode,
        tool_name=name,
        after_tool_result=after_result,
        cache_policy="marks",
    )
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1:
            raise SimBadRequest("thinking.budget_tokens: a positive integer is required")
        if isinstance(max_tokens, int) and budget >= max_tokens:
            raise SimBadRequest("`max_tokens` must be greater than `thinking.budget_tokens`")
        ask.thinking_budget = budget
    elif isinstance(thinking, dict) and thinking.get("type") == "adaptive":
        ask.thinking_budget = -1
    return ask


def _add_content(prompt: Prompt, content: Any, where: str) -> None:
    if isinstance(content, str):
        prompt.text(content)
        return
    if not isinstance(content, list):
        raise SimBadRequest(f"{where}: Input should be a string or a list of blocks")
    for block in content:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise SimBadRequest(f"{where}: each block needs a type")
        kind = block["type"]
        if kind == "text":
            prompt.text(str(block.get("text", "")))
        elif kind == "image":
            source = block.get("source") or {}
            prompt.image(str(source.get("data") or source.get("url") or source))
        elif kind == "tool_use":
            prompt.json({"name": block.get("name"), "input": block.get("input")})
        elif kind == "tool_result":
            prompt.text(str(block.get("tool_use_id", "")))
            inner = block.get("content")
            if inner:
                _add_content(prompt, inner, where)
        elif kind == "thinking":
            prompt.text(str(block.get("thinking", "")))
        else:
            prompt.json({k: v for k, v in block.items() if k != "cache_control"})
        if block.get("cache_control"):
            prompt.mark(block["cache_control"])


def _tool_choice(raw: Any) -> tuple[Any, str | None]:
    if raw is None:
        return "auto", None
    if not isinstance(raw, dict) or raw.get("type") not in ("auto", "any", "tool", "none"):
        raise SimBadRequest("tool_choice: type must be auto, any, tool or none")
    kind = raw["type"]
    if kind == "tool":
        if not isinstance(raw.get("name"), str):
            raise SimBadRequest("tool_choice.name: Field required")
        return "tool", raw["name"]
    return {"any": "required"}.get(kind, kind), None
