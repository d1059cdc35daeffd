"""The OpenAI wire protocol (chat completions, embeddings, models, and the Responses API in
`wire_responses`), plus Azure's path shape."""

from __future__ import annotations

import base64
import math
import re
import secrets
import time
from typing import Any

from aiohttp import web

from tokenway.sim import text as tx
from tokenway.sim.batch_api import BatchAPI
from tokenway.sim.engine import Ask, Plan, Prompt, SimBadRequest, Tool
from tokenway.sim.ratelimit import Decision, LimitSnapshot, go_duration
from tokenway.sim.server import Gate, SimError, SimServer, Wire, json_response, sse

MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "o3-mini", "o4-mini"]
EMBEDDING_MODELS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}
_REASONING = re.compile(r"^o\d|reasoning|reasoner")


def is_reasoning_model(model: str) -> bool:
    """OpenAI-style reasoning models: o1, o3-mini, ... or any name mentioning reasoning."""
    return bool(_REASONING.search(model))


class OpenAIWire(Wire):
    """`/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`, `/v1/models` and Azure
    deployments."""

    def __init__(self, server: SimServer) -> None:
        super().__init__(server)
        self.batches = BatchAPI(self)
        """The Batch API (`/v1/files`, `/v1/batches`), its lines run by `completion`."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat),
            web.post("/v1/responses", self.responses),
            web.post("/v1/embeddings", self.embeddings),
            web.get("/v1/models", self.models),
            web.get("/v1/models/{model}", self.model),
            web.post("/openai/deployments/{deployment}/chat/completions", self.chat),
            web.post("/openai/deployments/{deployment}/embeddings", self.embeddings),
            *self.batches.routes(),
        ]

    def presented_key(self, request: web.Request) -> str | None:
        if request.path.startswith("/openai/"):
            return request.headers.get("api-key")
        auth = request.headers.get("Authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    def precheck(self, request: web.Request) -> None:
        if request.path.startswith("/openai/") and not request.query.get("api-version"):
            raise SimError(400, "Missing required query parameter 'api-version'.", code="400")

    def common_headers(self) -> dict[str, str]:
        return {"x-request-id": "req_" + secrets.token_hex(16)}

    def error_response(self, err: SimError) -> web.Response:
        etype = err.etype or ("server_error" if err.status >= 500 else "invalid_request_error")
        headers = {}
        if err.retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(err.retry_after_s)))
        body = {
            "error": {"message": err.message, "type": etype, "param": err.param, "code": err.code}
        }
        return json_response(body, status=err.status, headers=headers)

    def limit_headers(self, snap: LimitSnapshot) -> dict[str, str]:
        headers = {}
        if snap.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(snap.rpm)
            headers["x-ratelimit-remaining-requests"] = str(snap.remaining_requests)
            headers["x-ratelimit-reset-requests"] = go_duration(snap.reset_requests_s)
        if snap.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(snap.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(snap.remaining_tokens)
            headers["x-ratelimit-reset-tokens"] = go_duration(snap.reset_tokens_s)
        return headers

    def rate_limited(self, decision: Decision) -> SimError:
        kind = decision.exceeded or "requests"
        snap = decision.snapshot
        limit = snap.rpm if kind == "requests" else snap.tpm
        unit = "RPM" if kind == "requests" else "TPM"
        return SimError(
            429,
            f"Rate limit reached for {self.server.name} on {kind} ({unit}): Limit {limit}. "
            f"Please try again in {go_duration(decision.retry_after_s)}.",
            etype=kind,
            code="rate_limit_exceeded",
            retry_after_s=decision.retry_after_s,
        )

    # ---- chat completions ------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = self.server.body(request)
        deployment = request.match_info.get("deployment")
        ask = parse_chat(body, deployment)
        plan = self.server.plan(ask)
        stream = bool(body.get("stream"))
        gate = await self.server.admit(request, plan.prompt_tokens + plan.output_tokens, stream)
        plan.commit(self.server.cache)
        tier = body.get("service_tier")
        tier = "default" if tier in (None, "auto") else str(tier)
        base = {
            "id": "chatcmpl-" + plan.uid,
            "created": int(time.time()),
            "model": ask.model,
            "service_tier": tier,
            "system_fingerprint": "fp_sim" + plan.uid[:6],
        }
        if stream:
            return await self._stream(request, body, plan, base, gate)
        await self.server.wait_whole(plan.output_tokens)
        out = self.completion(plan, base)
        return json_response(out, headers=gate.headers)

    def completion(self, plan: Plan, base: dict[str, Any]) -> dict[str, Any]:
        """A whole `chat.completion` for `plan` (`base`: its id, model and tier fields)."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if plan.tool else plan.text_str,
            "refusal": None,
            "annotations": [],
        }
        if self._shows_reasoning(plan):
            message["reasoning_content"] = "".join(plan.thinking)
        if plan.tool is not None:
            message["tool_calls"] = [_tool_call_json(plan)]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": _finish(plan),
        }
        return {**base, "object": "chat.completion", "choices": [choice], "usage": self.usage(plan)}

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        plan: Plan,
        base: dict[str, Any],
        gate: Gate,
    ) -> web.StreamResponse:
        opts = body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        base = {**base, "object": "chat.completion.chunk"}
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse({**base, "choices": [choice]})

        stream = await self.server.open_stream(request, gate)
        await stream.send(chunk({"role": "assistant", "content": "", "refusal": None}))
        if self._shows_reasoning(plan):
            for piece in plan.thinking:
                await stream.pace()
                await stream.send(chunk({"reasoning_content": piece}))
        elif plan.thinking:
            await stream.pace(plan.thinking_tokens)
        for piece in plan.text:
            await stream.pace()
            await stream.send(chunk({"content": piece}))
        if plan.tool is not None:
            call = _tool_call_json(plan)
            call["function"] = {"name": plan.tool.name, "arguments": ""}
            await stream.pace()
            await stream.send(chunk({"tool_calls": [{"index": 0, **call}]}))
            pieces = tx.split_pieces(plan.tool.arguments_json, 4)
            for piece in pieces:
                await stream.pace(max(1, plan.tool_tokens // len(pieces)))
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                await stream.send(chunk(delta))
        await stream.send(chunk({}, _finish(plan)))
        if include_usage:
            await stream.send(sse({**base, "choices": [], "usage": self.usage(plan)}))
        await stream.send(b"data: [DONE]\n\n")
        return await stream.finish()

    def _shows_reasoning(self, plan: Plan) -> bool:
        return bool(plan.thinking) and self.server.scenario.usage_style == "deepseek"

    def usage(self, plan: Plan) -> dict[str, Any]:
        """Usage in OpenAI's shape: prompt_tokens includes the cached tokens."""
        prompt, out, read = plan.prompt_tokens, plan.output_tokens, plan.cache.read
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": read, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": plan.thinking_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if self.server.scenario.usage_style == "deepseek":
            usage["prompt_cache_hit_tokens"] = read
            usage["prompt_cache_miss_tokens"] = prompt - read
        return usage

    async def responses(self, request: web.Request) -> web.StreamResponse:
        from tokenway.sim import wire_responses  # imported here: it imports this module

        return await wire_responses.handle(self.server, request)

    # ---- embeddings and models -------------------------------------------------------------

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = self.server.body(request)
        model = str(body.get("model") or request.match_info.get("deployment") or "")
        if not model:
            raise SimBadRequest("you must provide a model parameter", "model")
        inputs = _embedding_inputs(body.get("input"))
        dims = body.get("dimensions") or EMBEDDING_MODELS.get(model, 1536)
        if not isinstance(dims, int) or dims < 1:
            raise SimBadRequest("dimensions must be a positive integer", "dimensions")
        counts = [len(i) if isinstance(i, list) else tx.count_tokens(i) for i in inputs]
        gate = await self.server.admit(request, sum(counts))
        await self.server.wait_whole(0)
        as_b64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            vec = tx.embedding(item if isinstance(item, str) else repr(item), dims, model)
            value: Any = base64.b64encode(tx.pack_float32(vec)).decode() if as_b64 else vec
            data.append({"object": "embedding", "index": index, "embedding": value})
        total = sum(counts)
        out = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }
        return json_response(out, headers=gate.headers)

    async def models(self, request: web.Request) -> web.StreamResponse:
        names = MODELS + list(EMBEDDING_MODELS)
        return json_response({"object": "list", "data": [_model_json(n) for n in names]})

    async def model(self, request: web.Request) -> web.StreamResponse:
        return json_response(_model_json(request.match_info["model"]))


def _model_json(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "tokenway-sim"}


def _finish(plan: Plan) -> str:
    if plan.tool is not None:
        return "tool_calls"
    return "length" if plan.capped else "stop"


def _tool_call_json(plan: Plan) -> dict[str, Any]:
    assert plan.tool is not None
    return {
        "id": "call_" + plan.tool.id,
        "type": "function",
        "function": {"name": plan.tool.name, "arguments": plan.tool.arguments_json},
    }


def _embedding_inputs(raw: Any) -> list[str | list[int]]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(isinstance(x, int) for x in raw):
            return [list(raw)]
        if all(isinstance(x, str) for x in raw):
            return list(raw)
        if all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw):
            return [list(x) for x in raw]
    raise SimBadRequest("'input' must be a string, a list of strings or of token arrays", "input")


def parse_chat(body: dict[str, Any], deployment: str | None = None) -> Ask:
    """An OpenAI chat completions body as an `Ask` (raises `SimBadRequest` when malformed)."""
    model = body.get("model") or deployment
    if not isinstance(model, str) or not model:
        raise SimBadRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimBadRequest("'messages' must be a non-empty array", "messages")
    prompt = Prompt()
    raw_tools = body.get("tools") or []
    tools: list[Tool] = []
    if raw_tools:
        if not isinstance(raw_tools, list):
            raise SimBadRequest("'tools' must be an array", "tools")
        for t in raw_tools:
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise SimBadRequest("each tool needs function.name", "tools")
            tools.append(Tool(fn["name"], fn.get("parameters") or {"type": "object"}))
        prompt.tools_header()
        prompt.json(raw_tools)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in _ROLES:
            raise SimBadRequest(f"messages[{i}] needs a valid role", f"messages[{i}].role")
        _add_message(prompt, msg, i)
    mode, name = _tool_choice(body.get("tool_choice"))
    ask = Ask(
        model=model,
        prompt=prompt,
        max_tokens=_max_tokens(body),
        tools=tools,
        tool_mode=mode,
        tool_name=name,
        after_tool_result=messages[-1].get("role") in ("tool", "function"),
        cache_policy="auto",
    )
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            ask.json_mode = True
        elif fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            ask.json_schema = schema if isinstance(schema, dict) else {"type": "object"}
    if is_reasoning_model(model) and body.get("reasoning_effort") != "none":
        ask.thinking_budget = -1
    return ask


_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def _add_message(prompt: Prompt, msg: dict[str, Any], index: int) -> None:
    role = msg["role"]
    prompt.role("system" if role == "developer" else role)
    if role == "tool":
        prompt.text(str(msg.get("tool_call_id", "")))
    content = msg.get("content")
    if isinstance(content, str):
        prompt.text(content)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                raise SimBadRequest("content parts must be objects", f"messages[{index}].content")
            kind = part.get("type")
            if kind == "text":
                prompt.text(str(part.get("text", "")))
            elif kind == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                prompt.image(str(url))
            else:
                prompt.json(part)
    elif content is not None:
        raise SimBadRequest("content must be a string or an array", f"messages[{index}].content")
    if msg.get("tool_calls"):
        prompt.json(msg["tool_calls"])
    prompt.end()


def _tool_choice(raw: Any) -> tuple[Any, str | None]:
    if raw is None or raw == "auto":
        return "auto", None
    if raw in ("none", "required"):
        return raw, None
    if isinstance(raw, dict):
        fn = raw.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return "tool", fn["name"]
    raise SimBadRequest("invalid tool_choice", "tool_choice")


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, int) or value < 1:
                raise SimBadRequest(f"'{key}' must be a positive integer", key)
            return value
    return None
