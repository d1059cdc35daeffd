"""The prefix cache, content generation, and timing."""

from __future__ import annotations

import time
from typing import Any

import openai
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.sim import text as tx
from tokenway.sim.cache import PrefixCache, prefix_keys

from .conftest import KEY, MakeSim, fast


def long_text(tokens: int, salt: str = "doc") -> str:
    return "".join(tx.words(tx.rng_for(salt), tokens))


async def test_openai_reports_cached_prefix_with_defaults(make_sim: MakeSim) -> None:
    sim = await make_sim("openai")  # block 64, minimum 1024, like OpenAI
    doc = long_text(1500)
    msgs: Any = [{"role": "system", "content": doc}, {"role": "user", "content": "q1"}]
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
        first = await c.chat.completions.create(model="gpt-4o", messages=msgs)
        again = await c.chat.completions.create(model="gpt-4o", messages=msgs)
        msgs[1]["content"] = "a different question"
        sibling = await c.chat.completions.create(model="gpt-4o", messages=msgs)
        other_model = await c.chat.completions.create(model="gpt-4o-mini", messages=msgs)
        short = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": long_text(500)}] * 2
        )
        short_again = await c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": long_text(500)}] * 2
        )

    def cached(r: Any) -> int:
        return int(r.usage.prompt_tokens_details.cached_tokens)

    assert cached(first) == 0
    total = again.usage.prompt_tokens  # type: ignore[union-attr]
    assert cached(again) == total - total % 64 and cached(again) >= 1024
    # The sibling shares the system prompt only: its cache covers that, in whole blocks.
    assert 1500 - 64 < cached(sibling) <= 1502 and cached(sibling) % 64 == 0
    assert cached(other_model) == 0
    assert cached(short_again) == 0 and short.usage.prompt_tokens < 1024  # type: ignore[union-attr]


async def test_deepseek_hit_and_miss(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(usage_style="deepseek", cache_min_tokens=64))
    msgs: Any = [{"role": "user", "content": long_text(200)}]
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
        await c.chat.completions.create(model="deepseek-chat", messages=msgs)
        raw = await c.chat.completions.with_raw_response.create(
            model="deepseek-chat", messages=msgs
        )
    usage = (await raw.http_response.aread()) and raw.http_response.json()["usage"]
    assert usage["prompt_cache_hit_tokens"] == 192
    assert (
        usage["prompt_cache_hit_tokens"] + usage["prompt_cache_miss_tokens"]
        == usage["prompt_tokens"]
    )
    assert usage["prompt_tokens_details"]["cached_tokens"] == 192


async def test_prefix_cache_can_be_off(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(prefix_cache=False, cache_min_tokens=64))
    msgs: Any = [{"role": "user", "content": long_text(200)}]
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
        await c.chat.completions.create(model="m", messages=msgs)
        r = await c.chat.completions.create(model="m", messages=msgs)
    assert r.usage.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]


@settings(max_examples=50, deadline=None)
@given(
    a=st.lists(st.integers(0, 3), min_size=0, max_size=40),
    b=st.lists(st.integers(0, 3), min_size=0, max_size=40),
    block=st.integers(1, 8),
)
def test_longest_hit_is_the_common_prefix_in_blocks(a: list[int], b: list[int], block: int) -> None:
    cache = PrefixCache()
    cache.store(prefix_keys("m", a, range(block, len(a) + 1, block)).values(), 60, now=0)
    hit = cache.longest_hit(prefix_keys("m", b, range(block, len(b) + 1, block)), now=1)
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    assert hit == common - common % block
    assert cache.longest_hit(prefix_keys("m", b, range(block, len(b) + 1, block)), now=61) == 0


def test_cache_is_bounded_lru() -> None:
    cache = PrefixCache(capacity=2)
    keys = [prefix_keys("m", [i], [1])[1] for i in range(3)]
    cache.store(keys[:2], 60, now=0)
    cache.store(keys[:1], 60, now=0)  # refresh: key 0 becomes the most recent
    cache.store(keys[2:], 60, now=0)
    assert len(cache) == 2
    assert cache.longest_hit({1: keys[1]}, now=0) == 0
    assert cache.longest_hit({1: keys[0]}, now=0) == 1


def test_every_vocabulary_word_is_one_token() -> None:
    for word in tx.VOCABULARY:
        assert len(tx.encode(word)) == 1 and len(tx.encode(" " + word)) == 1, word
    pieces = tx.words(tx.rng_for(1), 200)
    assert tx.count_tokens("".join(pieces)) == 200


def test_schema_values() -> None:
    rng = tx.rng_for(0)
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer", "minimum": 5},
            "b": {"type": "boolean"},
            "a": {"type": "array", "items": {"$ref": "#/$defs/thing"}},
            "o": {"anyOf": [{"type": "null"}, {"type": "number"}]},
            "e": {"enum": ["x", "y"]},
            "n": {"type": ["null", "string"]},
            "skip": {"type": "string"},
        },
        "required": ["s", "i", "b", "a", "o", "e", "n"],
        "$defs": {"thing": {"type": "object", "properties": {"k": {"const": 3}}}},
    }
    assert tx.value_for_schema(schema, rng) == {
        "s": "sim",
        "i": 6,
        "b": True,
        "a": [{"k": 3}],
        "o": 1,
        "e": "x",
        "n": "sim",
    }


async def test_timing_follows_ttft_and_rate(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(ttft_ms=80, tokens_per_s=200, output_tokens=20))
    msgs: Any = [{"role": "user", "content": "slow"}]
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
        started = time.monotonic()
        await c.chat.completions.create(model="m", messages=msgs)
        whole = time.monotonic() - started
        started = time.monotonic()
        first_at = None
        async for chunk in await c.chat.completions.create(model="m", messages=msgs, stream=True):
            if first_at is None and chunk.choices and chunk.choices[0].delta.content:
                first_at = time.monotonic() - started
        streamed = time.monotonic() - started
    assert 0.08 + 0.1 <= whole < 0.6
    assert first_at is not None and 0.08 <= first_at < 0.3
    assert 0.08 + 0.09 <= streamed < 0.6
