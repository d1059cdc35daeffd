"""The OpenAI Responses API (`POST /v1/responses`) of the simulated OpenAI provider.

It keeps nothing, as tokenway uses it: `store` is echoed but no response is kept, so a
`previous_response_id` is refused as unknown, and a reasoning item in the input must carry its
`encrypted_content` (OpenAI's rule when items are not stored). Answers come from the same engine
as chat completions (same pacing, faults, limits and prefix cache); usage reports
`input_tokens_details.cached_tokens` and `output_tokens_details.reasoning_tokens`, and a stream
sends the API's event sequence, every event with its `sequence_number`:

    response.created, response.in_progress,
    per output item: response.output_item.added,
      reasoning:      (no deltas: the sim shows no reasoning text)
      message:        response.content_part.added, response.output_text.delta ...,
                      response.output_text.done, response.content_part.done
      function_call:  response.function_call_arguments.delta ..., .done
    response.output_item.done, then response.completed (response.incomplete when capped)
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from tokenway.sim import text as tx
from tokenway.sim.engine import Ask, Plan, Prompt, SimBadRequest, Tool
from tokenway.sim.server import SimError, SimServer, json_response, sse
from tokenway.sim.wire_openai import is_reasoning_model

__all__ = ["handle", "parse_responses"]

JSON = dict[str, Any]
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _obj(body: JSON, key: str) -> JSON:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _content(prompt: Prompt, content: Any, path: str) -> None:
    if isinstance(content, str):
        prompt.text(content)
        return
    if not isinstance(content, list):
        raise SimBadRequest(f"{path}: must be a string or an array of parts", path)
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            prompt.text(str(part.get("text", "")))
        elif kind == "refusal":
            prompt.text(str(part.get("refusal", "")))
        elif kind == "input_image":
            prompt.image(str(part.get("image_url") or part.get("file_id") or ""))
        else:
            raise SimBadRequest(f"{path}: unknown content part type {kind!r}", path)


def _item(prompt: Prompt, item: Any, i: int) -> str:
    path = f"input[{i}]"
    if not isinstance(item, dict):
        raise SimBadRequest(f"{path}: must be an object", path)
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        role = _ROLES.get(str(item.get("role")))
        if role is None:
            raise SimBadRequest(f"{path}.role: unknown role", f"{path}.role")
        prompt.role(role)
        _content(prompt, item.get("content"), f"{path}.content")
    elif kind == "function_call":
        prompt.role("assistant")
        prompt.json({k: item.get(k) for k in ("call_id", "name", "arguments")})
    elif kind == "function_call_output":
        prompt.role("tool")
        prompt.text(str(item.get("call_id", "")))
        output = item.get("output")
        if isinstance(output, str):
            prompt.text(output)
        else:
            _content(prompt, output, f"{path}.output")
    elif kind == "reasoning":
        if not item.get("encrypted_content"):
            raise SimError(
                404,
                f"Item with id '{item.get('id')}' not found. Items are not persisted when "
                "`store` is set to false. Try again with `store` set to true, or remove this "
                "item from your input.",
                param="input",
            )
        return kind  # sealed reasoning: nothing of it is shown to the prompt
    else:
        raise SimBadRequest(f"{path}.type: unknown item type {kind!r}", f"{path}.type")
    prompt.end()
    return str(kind)


def parse_responses(body: JSON) -> Ask:
    """A Responses API body as an `Ask` (`SimBadRequest` or `SimError` when it is refused)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise SimBadRequest("you must provide a model parameter", "model")
    previous = body.get("previous_response_id")
    if previous is not None:
        raise SimError(
            400,
            f"Previous response with id '{previous}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise SimBadRequest("'input' must be a string or a non-empty array", "input")
    prompt = Prompt()
    tools: list[Tool] = []
    raw_tools = body.get("tools") or []
    if not isinstance(raw_tools, list):
        raise SimBadRequest("'tools' must be an array", "tools")
    for t in raw_tools:
        if not isinstance(t, dict) or t.get("type") != "function" or not t.get("name"):
            raise SimBadRequest("each tool must be a function tool with a name", "tools")
        tools.append(Tool(str(t["name"]), t.get("parameters") or {"type": "object"}))
    if raw_tools:
        prompt.tools_header()
        prompt.json(raw_tools)
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        prompt.role("system")
        prompt.text(instructions)
        prompt.end()
    kinds = [_item(prompt, item, i) for i, item in enumerate(items)]
    mode, name = _tool_choice(body.get("tool_choice"))
    cap = body.get("max_output_tokens")
    if cap is not None and (not isinstance(cap, int) or cap < 16):
        raise SimBadRequest(
            "'max_output_tokens' must be an integer of at least 16", "max_output_tokens"
        )
    ask = Ask(
        model=model,
        prompt=prompt,
        max_tokens=cap,
        tools=tools,
        tool_mode=mode,
        tool_name=name,
        after_tool_result=kinds[-1] == "function_call_output",
        cache_policy="auto",
    )
    fmt = _obj(body, "text").get("format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            ask.json_mode = True
        elif fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            ask.json_schema = schema if isinstance(schema, dict) else {"type": "object"}
    if is_reasoning_model(model) and _obj(body, "reasoning").get("effort") != "none":
        ask.thinking_budget = -1
    return ask


def _tool_choice(raw: Any) -> tuple[Any, str | None]:
    if raw is None or raw == "auto":
        return "auto", None
    if raw in ("none", "required"):
        return raw, None
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return "tool", raw["name"]
    raise SimBadRequest("invalid tool_choice", "tool_choice")


class _Reply:
    """The Response object and its output items for one planned reply."""

    def __init__(self, body: JSON, plan: Plan, model: str) -> None:
        self.body = body
        self.plan = plan
        self.model = model
        self.id = "resp_" + plan.uid
        self.created = int(time.time())
        include = body.get("include")
        self.sealed = isinstance(include, list) and "reasoning.encrypted_content" in include

    def reasoning(self) -> JSON:
        sealed = "sim-sealed." + self.plan.signature if self.sealed else None
        return {
            "id": "rs_" + self.plan.uid,
            "type": "reasoning",
            "summary": [],
            "encrypted_content": sealed,
        }

    def message(self, text: str, status: str) -> JSON:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        content = [part] if status != "in_progress" else []
        return {
            "id": "msg_" + self.plan.uid,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def call(self, arguments: str, status: str) -> JSON:
        tool = self.plan.tool
        assert tool is not None
        return {
            "id": "fc_" + self.plan.uid,
            "type": "function_call",
            "status": status,
            "call_id": "call_" + tool.id,
            "name": tool.name,
            "arguments": arguments,
        }

    def output(self) -> list[JSON]:
        plan, done = self.plan, "incomplete" if self.plan.capped else "completed"
        out = [self.reasoning()] if plan.thinking else []
        if plan.tool is not None:
            out.append(self.call(plan.tool.arguments_json, done))
        elif plan.text or not plan.thinking:
            out.append(self.message(plan.text_str, done))
        return out

    def usage(self) -> JSON:
        plan = self.plan
        return {
            "input_tokens": plan.prompt_tokens,
            "input_tokens_details": {"cached_tokens": plan.cache.read},
            "output_tokens": plan.output_tokens,
            "output_tokens_details": {"reasoning_tokens": plan.thinking_tokens},
            "total_tokens": plan.prompt_tokens + plan.output_tokens,
        }

    def response(self, status: str, output: list[JSON] | None = None) -> JSON:
        body, final = self.body, status in ("completed", "incomplete")
        tier = body.get("service_tier")
        reasoning, text = _obj(body, "reasoning"), _obj(body, "text")
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "background": False,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "model": self.model,
            "output": output if output is not None else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": {"effort": reasoning.get("effort"), "summary": None},
            "service_tier": "default" if tier in (None, "auto") else str(tier),
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": {"format": text.get("format") or {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": self.usage() if final else None,
            "user": body.get("user"),
        }


async def handle(server: SimServer, request: web.Request) -> web.StreamResponse:
    """`POST /v1/responses`, whole or streamed."""
    body = server.body(request)
    ask = parse_responses(body)
    plan = server.plan(ask)
    stream = bool(body.get("stream"))
    gate = await server.admit(request, plan.prompt_tokens + plan.output_tokens, stream)
    plan.commit(server.cache)
    reply = _Reply(body, plan, ask.model)
    status = "incomplete" if plan.capped else "completed"
    items = reply.output()
    if not stream:
        await server.wait_whole(plan.output_tokens)
        return json_response(reply.response(status, items), headers=gate.headers)

    out = await server.open_stream(request, gate)
    seq = 0

    async def event(kind: str, **fields: Any) -> None:
        nonlocal seq
        await out.send(sse({"type": kind, **fields, "sequence_number": seq}, kind))
        seq += 1

    await event("response.created", response=reply.response("in_progress"))
    await event("response.in_progress", response=reply.response("in_progress"))
    for index, item in enumerate(items):
        ids = {"item_id": item["id"], "output_index": index}
        if item["type"] == "reasoning":
            await event("response.output_item.added", output_index=index, item=item)
            await out.pace(plan.thinking_tokens)
        elif item["type"] == "message":
            await event(
                "response.output_item.added",
                output_index=index,
                item=reply.message("", "in_progress"),
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            await event("response.content_part.added", **ids, content_index=0, part=part)
            for piece in plan.text:
                await out.pace()
                await event(
                    "response.output_text.delta", **ids, content_index=0, delta=piece, logprobs=[]
                )
            text = plan.text_str
            await event("response.output_text.done", **ids, content_index=0, text=text, logprobs=[])
            await event(
                "response.content_part.done", **ids, content_index=0, part={**part, "text": text}
            )
        else:
            assert plan.tool is not None
            await event(
                "response.output_item.added", output_index=index, item=reply.call("", "in_progress")
            )
            pieces = tx.split_pieces(plan.tool.arguments_json, 4)
            for piece in pieces:
                await out.pace(max(1, plan.tool_tokens // len(pieces)))
                await event("response.function_call_arguments.delta", **ids, delta=piece)
            await event(
                "response.function_call_arguments.done", **ids, arguments=plan.tool.arguments_json
            )
        await event("response.output_item.done", output_index=index, item=item)
    await event(f"response.{status}", response=reply.response(status, items))
    return await out.finish()
