"""The Gemini (Generative Language API) wire protocol under `/v1beta/models/{model}:{method}`."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from aiohttp import web

from tokenway.sim import text as tx
from tokenway.sim.engine import Ask, Plan, Prompt, SimBadRequest, Tool
from tokenway.sim.ratelimit import Decision, LimitSnapshot
from tokenway.sim.server import Gate, SimError, Wire, json_response

MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-embedding-001"]
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_CHUNK_TOKENS = 4


class GeminiWire(Wire):
    """generateContent, streamGenerateContent, embedContent, batchEmbedContents, countTokens."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1beta/models/{target}", self.dispatch),
            web.post("/v1/models/{target}", self.dispatch),
            web.get("/v1beta/models", self.models),
        ]

    def presented_key(self, request: web.Request) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query.get("key")

    def error_response(self, err: SimError) -> web.Response:
        status = _STATUS_NAMES.get(err.status, "INTERNAL" if err.status >= 500 else "UNKNOWN")
        error: dict[str, Any] = {"code": err.status, "message": err.message, "status": status}
        details = []
        if err.status == 429:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaMetric": "generativelanguage.googleapis.com/requests"}],
                }
            )
        if err.retry_after_s is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{max(1, math.ceil(err.retry_after_s))}s",
                }
            )
        if details:
            error["details"] = details
        return json_response({"error": error}, status=err.status)

    def limit_headers(self, snap: LimitSnapshot) -> dict[str, str]:
        return {}

    def rate_limited(self, decision: Decision) -> SimError:
        what = "requests" if decision.exceeded == "requests" else "input tokens"
        return SimError(
            429,
            f"You exceeded your current quota of {what} per minute on {self.server.name}.",
            retry_after_s=decision.retry_after_s,
        )

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["target"].rpartition(":")
        if not model:
            raise SimError(404, f"Method not found: {request.path}")
        body = self.server.body(request)
        if method == "generateContent":
            return await self.generate(request, model, body, stream=False)
        if method == "streamGenerateContent":
            return await self.generate(request, model, body, stream=True)
        if method == "embedContent":
            return await self.embed(request, model, [body], single=True)
        if method == "batchEmbedContents":
            requests = body.get("requests")
            if not isinstance(requests, list) or not requests:
                raise SimBadRequest("requests: at least one request is required")
            return await self.embed(request, model, requests, single=False)
        if method == "countTokens":
            inner = _get(body, "generateContentRequest")
            ask = parse_generate(model, inner if isinstance(inner, dict) else body)
            tokens = len(ask.prompt.tokens)
            return json_response(
                {"totalTokens": tokens, "promptTokensDetails": _details(ask, tokens)}
            )
        raise SimError(404, f"Method not found: {method}")

    async def generate(
        self, request: web.Request, model: str, body: dict[str, Any], stream: bool
    ) -> web.StreamResponse:
        ask = parse_generate(model, body)
        plan = self.server.plan(ask)
        gate = await self.server.admit(request, plan.prompt_tokens + plan.output_tokens, stream)
        plan.commit(self.server.cache)
        config = _get(body, "generationConfig") or {}
        thinking = _get(config, "thinkingConfig") or {}
        show_thoughts = bool(_get(thinking, "includeThoughts"))
        if stream:
            return await self._stream(request, ask, plan, gate, show_thoughts)
        await self.server.wait_whole(plan.output_tokens)
        parts: list[dict[str, Any]] = []
        if show_thoughts and plan.thinking:
            parts.append({"text": "".join(plan.thinking), "thought": True})
        if plan.tool is not None:
            parts.append({"functionCall": {"name": plan.tool.name, "args": plan.tool.arguments}})
        else:
            parts.append({"text": plan.text_str})
        out = self._response(ask, plan, parts, _finish(plan), plan.output_tokens)
        return json_response(out, headers=gate.headers)

    def _response(
        self, ask: Ask, plan: Plan, parts: list[dict[str, Any]], finish: str | None, produced: int
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": self.usage(ask, plan, produced),
            "modelVersion": ask.model,
            "responseId": plan.uid,
        }

    async def _stream(
        self, request: web.Request, ask: Ask, plan: Plan, gate: Gate, show_thoughts: bool
    ) -> web.StreamResponse:
        as_sse = request.query.get("alt") == "sse"
        content_type = "text/event-stream" if as_sse else "application/json"
        stream = await self.server.open_stream(request, gate, content_type)
        first = True

        async def send(obj: dict[str, Any]) -> None:
            nonlocal first
            payload = msgspec.json.encode(obj)
            if as_sse:
                await stream.send(b"data: " + payload + b"\r\n\r\n")
            else:
                await stream.send((b"[" if first else b",\r\n") + payload)
            first = False

        produced = 0
        if plan.thinking:
            await stream.pace(plan.thinking_tokens)
            produced += plan.thinking_tokens
            if show_thoughts:
                part = {"text": "".join(plan.thinking), "thought": True}
                await send(self._response(ask, plan, [part], None, produced))
        if plan.tool is not None:
            await stream.pace(plan.tool_tokens)
            call = {"functionCall": {"name": plan.tool.name, "args": plan.tool.arguments}}
            await send(self._response(ask, plan, [call], "STOP", plan.output_tokens))
        else:
            groups = [
                plan.text[i : i + _CHUNK_TOKENS] for i in range(0, len(plan.text), _CHUNK_TOKENS)
            ] or [[]]
            for n, group in enumerate(groups):
                await stream.pace(max(1, len(group)))
                produced += len(group)
                finish = _finish(plan) if n == len(groups) - 1 else None
                await send(self._response(ask, plan, [{"text": "".join(group)}], finish, produced))
        if not as_sse:
            await stream.send(b"]" if not first else b"[]")
        return await stream.finish()

    def usage(self, ask: Ask, plan: Plan, produced: int) -> dict[str, Any]:
        """usageMetadata: promptTokenCount includes cached tokens, thoughts are separate."""
        thoughts = min(produced, plan.thinking_tokens)
        candidates = produced - thoughts
        usage: dict[str, Any] = {
            "promptTokenCount": plan.prompt_tokens,
            "candidatesTokenCount": candidates,
            "totalTokenCount": plan.prompt_tokens + candidates + thoughts,
            "promptTokensDetails": _details(ask, plan.prompt_tokens),
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        if plan.cache.read:
            usage["cachedContentTokenCount"] = plan.cache.read
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": plan.cache.read}]
        return usage

    async def embed(
        self, request: web.Request, model: str, items: list[Any], single: bool
    ) -> web.StreamResponse:
        texts: list[str] = []
        dims: list[int] = []
        for item in items:
            content = _get(item, "content") if isinstance(item, dict) else None
            parts = _get(content, "parts") if isinstance(content, dict) else None
            if not isinstance(parts, list):
                raise SimBadRequest("content.parts: Field required")
            texts.append("".join(str(p.get("text", "")) for p in parts if isinstance(p, dict)))
            size = _get(item, "outputDimensionality")
            dims.append(size if isinstance(size, int) and size > 0 else _default_dims(model))
        gate = await self.server.admit(request, sum(tx.count_tokens(t) for t in texts))
        await self.server.wait_whole(0)
        vectors = [{"values": tx.embedding(t, d, model)} for t, d in zip(texts, dims, strict=True)]
        out = {"embedding": vectors[0]} if single else {"embeddings": vectors}
        return json_response(out, headers=gate.headers)

    async def models(self, request: web.Request) -> web.StreamResponse:
        data = [
            {"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": _methods(m)}
            for m in MODELS
        ]
        return json_response({"models": data})


def _methods(model: str) -> list[str]:
    if "embedding" in model:
        return ["embedContent", "batchEmbedContents"]
    return ["generateContent", "streamGenerateContent", "countTokens"]


def _default_dims(model: str) -> int:
    return 3072 if model == "gemini-embedding-001" else 768


def _finish(plan: Plan) -> str:
    return "MAX_TOKENS" if plan.capped and plan.tool is None else "STOP"


def _details(ask: Ask, tokens: int) -> list[dict[str, Any]]:
    image_tokens = ask.prompt.images * tx.IMAGE_TOKENS
    details = [{"modality": "TEXT", "tokenCount": tokens - image_tokens}]
    if image_tokens:
        details.append({"modality": "IMAGE", "tokenCount": image_tokens})
    return details


def _get(obj: Any, camel: str) -> Any:
    """A field by its camelCase name or its snake_case twin (the API accepts both)."""
    if not isinstance(obj, dict):
        return None
    if camel in obj:
        return obj[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return obj.get(snake)


def parse_generate(model: str, body: dict[str, Any]) -> Ask:
    """A generateContent body as an `Ask` (raises `SimBadRequest` when malformed)."""
    contents = _get(body, "contents")
    if not isinstance(contents, list) or not contents:
        raise SimBadRequest("contents is not specified")
    prompt = Prompt()
    tools: list[Tool] = []
    raw_tools = _get(body, "tools") or []
    if raw_tools:
        prompt.tools_header()
        prompt.json(raw_tools)
        for group in raw_tools:
            for decl in _get(group, "functionDeclarations") or []:
                if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
                    raise SimBadRequest("tools.function_declarations: name is required")
                schema = _get(decl, "parametersJsonSchema") or decl.get("parameters")
                tools.append(Tool(decl["name"], schema or {"type": "object"}))
    system = _get(body, "systemInstruction")
    if system:
        prompt.role("system")
        _add_parts(prompt, system)
        prompt.end()
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise SimBadRequest(f"contents[{i}] must be an object")
        prompt.role("assistant" if content.get("role") == "model" else "user")
        _add_parts(prompt, content)
        prompt.end()
    last_parts = _get(contents[-1], "parts") or []
    after_result = any(
        isinstance(p, dict) and _get(p, "functionResponse") is not None for p in last_parts
    )
    mode, name = _tool_mode(_get(_get(body, "toolConfig"), "functionCallingConfig"))
    config = _get(body, "generationConfig") or {}
    max_out = _get(config, "maxOutputTokens")
    if max_out is not None and (not isinstance(max_out, int) or max_out < 1):
        raise SimBadRequest("generationConfig.maxOutputTokens must be a positive integer")
    ask = Ask(
        model=model,
        prompt=prompt,
        max_tokens=max_out,
        tools=tools,
        tool_mode=mode,
        tool_name=name,
        after_tool_result=after_result,
        cache_policy="auto",
    )
    if _get(config, "responseMimeType") == "application/json":
        schema = _get(config, "responseJsonSchema") or _get(config, "responseSchema")
        if isinstance(schema, dict):
            ask.json_schema = schema
        else:
            ask.json_mode = True
    thinking = _get(config, "thinkingConfig")
    if isinstance(thinking, dict):
        budget = _get(thinking, "thinkingBudget")
        ask.thinking_budget = budget if isinstance(budget, int) else -1
    return ask


def _add_parts(prompt: Prompt, content: Any) -> None:
    if isinstance(content, str):
        prompt.text(content)
        return
    parts = _get(content, "parts")
    if not isinstance(parts, list):
        raise SimBadRequest("parts must be a list")
    for part in parts:
        if not isinstance(part, dict):
            raise SimBadRequest("each part must be an object")
        if "text" in part:
            prompt.text(str(part["text"]))
        elif _get(part, "inlineData") is not None:
            prompt.image(str(_get(_get(part, "inlineData"), "data")))
        elif _get(part, "fileData") is not None:
            prompt.image(str(_get(_get(part, "fileData"), "fileUri")))
        else:
            prompt.json(part)


def _tool_mode(config: Any) -> tuple[Any, str | None]:
    mode = str(_get(config, "mode") or "AUTO").upper()
    allowed = _get(config, "allowedFunctionNames") or []
    if mode == "NONE":
        return "none", None
    if mode in ("ANY", "VALIDATED") and len(allowed) == 1:
        return "tool", str(allowed[0])
    return ("required" if mode == "ANY" else "auto"), None
