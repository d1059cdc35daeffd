"""What a simulated model answers, independent of the wire protocol.

Each protocol module parses its request into an `Ask` (prompt tokens, tools, limits, modes);
`plan_reply` turns that into a `Plan`: the reply's pieces (one token each, so streams can send
them one by one), the tool call if any, the token counts and the prefix-cache outcome. The
reply is a function of (model, prompt tokens, seed) only.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from tokenway.config.schema import SimScenario
from tokenway.sim import text as tx
from tokenway.sim.cache import PrefixCache, prefix_keys

# Pseudo token ids for message framing, outside o200k's range so they never collide.
_ROLE_IDS = {"system": 300_001, "user": 300_002, "assistant": 300_003, "tool": 300_004}
_END_ID = 300_010
_TOOLS_ID = 300_011

AUTO_CACHE_TTL_S = 600.0
MARK_TTL_S = {"5m": 300.0, "1h": 3600.0}


class SimBadRequest(Exception):
    """The request is malformed; the protocol module answers 400 in its own shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass
class Prompt:
    """The prompt as a token sequence, with content-block ends and cache breakpoints."""

    tokens: list[int] = field(default_factory=list)
    boundaries: list[int] = field(default_factory=list)
    breakpoints: list[tuple[int, str]] = field(default_factory=list)
    images: int = 0

    def role(self, role: str) -> None:
        self.tokens.append(_ROLE_IDS.get(role, _ROLE_IDS["user"]))

    def end(self) -> None:
        self.tokens.append(_END_ID)
        self.boundaries.append(len(self.tokens))

    def text(self, text: str) -> None:
        self.tokens.extend(tx.encode(text))
        self.boundaries.append(len(self.tokens))

    def json(self, value: Any) -> None:
        self.text(json.dumps(value, sort_keys=True, separators=(",", ":")))

    def tools_header(self) -> None:
        self.tokens.append(_TOOLS_ID)

    def image(self, ref: str) -> None:
        """An image costs a fixed IMAGE_TOKENS; its identity still shapes the prefix."""
        seed = int.from_bytes(hashlib.blake2b(ref.encode(), digest_size=4).digest(), "big")
        self.tokens.extend([400_000 + seed % 1_000_000] * tx.IMAGE_TOKENS)
        self.boundaries.append(len(self.tokens))
        self.images += 1

    def mark(self, cache_control: Any) -> None:
        """A `cache_control` breakpoint at the current end (Anthropic)."""
        ttl = cache_control.get("ttl") if isinstance(cache_control, dict) else None
        self.breakpoints.append((len(self.tokens), "1h" if ttl == "1h" else "5m"))


@dataclass
class Tool:
    name: str
    schema: dict[str, Any]


@dataclass
class Ask:
    """A generation request in protocol-neutral terms."""

    model: str
    prompt: Prompt
    max_tokens: int | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_mode: Literal["auto", "none", "required", "tool"] = "auto"
    tool_name: str | None = None
    after_tool_result: bool = False
    json_mode: bool = False
    json_schema: dict[str, Any] | None = None
    thinking_budget: int | None = None
    cache_policy: Literal["auto", "marks", "off"] = "auto"


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    arguments_json: str


@dataclass
class CacheUse:
    """Prompt tokens read from and written to the prefix cache, and what to store on success."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    to_store: list[tuple[bytes, float]] = field(default_factory=list)

    @property
    def written(self) -> int:
        return self.write_5m + self.write_1h


@dataclass
class Plan:
    """The reply to one request: pieces are single tokens, counts are what usage reports."""

    uid: str
    prompt_tokens: int
    images: int
    cache: CacheUse
    thinking: list[str]
    signature: str
    text: list[str]
    tool: ToolCall | None
    tool_tokens: int
    capped: bool

    @property
    def thinking_tokens(self) -> int:
        return len(self.thinking)

    @property
    def output_tokens(self) -> int:
        return len(self.thinking) + len(self.text) + self.tool_tokens

    @property
    def text_str(self) -> str:
        return "".join(self.text)

    def commit(self, cache: PrefixCache) -> None:
        """Remember this prompt's prefixes: called once the request is admitted."""
        for key, ttl in self.cache.to_store:
            cache.store([key], ttl)


def plan_reply(ask: Ask, scenario: SimScenario, cache: PrefixCache | None) -> Plan:
    """Decide the whole reply to `ask` (see module docstring)."""
    tokens = ask.prompt.tokens
    digest = hashlib.blake2b(repr(tokens).encode(), digest_size=16).hexdigest()
    rng = tx.rng_for(ask.model, digest, scenario.seed)
    uid = f"{rng.getrandbits(96):024x}"
    use = CacheUse()
    if scenario.prefix_cache and cache is not None:
        use = _cache_use(ask, scenario, cache)

    cap = ask.max_tokens if ask.max_tokens is not None else 1 << 30
    thinking: list[str] = []
    if ask.thinking_budget is not None and ask.thinking_budget != 0:
        budget = scenario.reasoning_tokens
        if ask.thinking_budget > 0:
            budget = min(budget, ask.thinking_budget)
        thinking = tx.words(rng, min(budget, cap))
    room = cap - len(thinking)
    capped = room <= 0 and cap < 1 << 30

    tool = _tool_call(ask, rng, uid)
    pieces: list[str] = []
    tool_tokens = 0
    if tool is not None:
        tool_tokens = tx.count_tokens(tool.arguments_json) + len(tx.encode(tool.name)) + 3
    elif ask.json_mode or ask.json_schema is not None:
        pieces = _json_pieces(ask, rng, scenario.output_tokens)
    else:
        pieces = tx.words(rng, scenario.output_tokens)
    if tool is None and len(pieces) > room:
        pieces = pieces[: max(0, room)]
        capped = True
    signature = base64.b64encode(
        hashlib.blake2b("".join(thinking).encode(), digest_size=48).digest()
    ).decode()
    return Plan(
        uid=uid,
        prompt_tokens=len(tokens),
        images=ask.prompt.images,
        cache=use,
        thinking=thinking,
        signature=signature if thinking else "",
        text=pieces,
        tool=tool,
        tool_tokens=tool_tokens,
        capped=capped,
    )


def _schema_value(schema: Any, rng: Any, param: str) -> Any:
    """A value for `schema`, or the 400 a provider gives a schema it cannot read."""
    try:
        return tx.value_for_schema(schema, rng)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError):
        raise SimBadRequest(
            "Invalid schema: it is not a JSON Schema this model can follow.", param
        ) from None


def _tool_call(ask: Ask, rng: Any, uid: str) -> ToolCall | None:
    if not ask.tools or ask.tool_mode == "none" or ask.after_tool_result:
        return None
    chosen = ask.tools[0]
    if ask.tool_mode == "tool":
        named = [t for t in ask.tools if t.name == ask.tool_name]
        if not named:
            raise SimBadRequest(f"tool_choice names unknown tool {ask.tool_name!r}", "tool_choice")
        chosen = named[0]
    args = _schema_value(chosen.schema or {"type": "object"}, rng, "tools")
    if not isinstance(args, dict):
        args = {"value": args}
    return ToolCall(
        id=uid[:24],
        name=chosen.name,
        arguments=args,
        arguments_json=json.dumps(args, separators=(",", ":")),
    )


def _json_pieces(ask: Ask, rng: Any, n_words: int) -> list[str]:
    if ask.json_schema is not None:
        value = _schema_value(ask.json_schema, rng, "response_format")
    else:
        value = {"answer": "".join(tx.words(rng, max(1, n_words)))}
    return tx.token_pieces(json.dumps(value))


def _cache_use(ask: Ask, scenario: SimScenario, cache: PrefixCache) -> CacheUse:
    tokens = ask.prompt.tokens
    if ask.cache_policy == "auto":
        block = max(1, scenario.cache_block_tokens)
        keys = prefix_keys(ask.model, tokens, range(block, len(tokens) + 1, block))
        hit = cache.longest_hit(keys)
        read = hit if hit >= scenario.cache_min_tokens else 0
        return CacheUse(read=read, to_store=[(k, AUTO_CACHE_TTL_S) for k in keys.values()])
    if ask.cache_policy != "marks" or not ask.prompt.breakpoints:
        return CacheUse()
    marks = dict(ask.prompt.breakpoints)
    last = max(marks)
    candidates = [p for p in ask.prompt.boundaries if p <= last] + list(marks)
    keys = prefix_keys(ask.model, tokens, candidates)
    hit = cache.longest_hit(keys)
    use = CacheUse(read=hit)
    if hit:
        use.to_store.append((keys[hit], 0.0))  # a read refreshes the entry's TTL
    done = hit
    for pos in sorted(marks):
        if pos <= done or pos < scenario.cache_min_tokens or pos not in keys:
            continue
        if marks[pos] == "1h":
            use.write_1h += pos - done
        else:
            use.write_5m += pos - done
        use.to_store.append((keys[pos], MARK_TTL_S[marks[pos]]))
        done = pos
    return use
