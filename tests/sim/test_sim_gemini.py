"""The Gemini-protocol simulator, driven with plain aiohttp."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tokenway.sim import text as tx

from .conftest import KEY, MakeSim, fast

HEADERS = {"x-goog-api-key": KEY}
USER: Any = [{"role": "user", "parts": [{"text": "hello gemini"}]}]


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def gen_url(base: str, model: str = "gemini-2.5-flash", method: str = "generateContent") -> str:
    return f"{base}/v1beta/models/{model}:{method}"


async def test_generate_content(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini", fast(output_tokens=7))
    status, data = await post(gen_url(sim.base_url), {"contents": USER}, HEADERS)
    assert status == 200
    cand = data["candidates"][0]
    assert cand["finishReason"] == "STOP" and cand["content"]["role"] == "model"
    assert tx.count_tokens(cand["content"]["parts"][0]["text"]) == 7
    usage = data["usageMetadata"]
    assert usage["candidatesTokenCount"] == 7
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 7
    assert "cachedContentTokenCount" not in usage
    assert data["modelVersion"] == "gemini-2.5-flash"
    assert sim.received[0].path == "/v1beta/models/gemini-2.5-flash:generateContent"


async def test_key_in_query_and_wrong_key(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini")
    status, _ = await post(gen_url(sim.base_url) + f"?key={KEY}", {"contents": USER})
    assert status == 200
    status, data = await post(gen_url(sim.base_url), {"contents": USER}, {"x-goog-api-key": "no"})
    assert status == 401
    assert data["error"]["status"] == "UNAUTHENTICATED" and data["error"]["code"] == 401


async def test_max_output_tokens(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini", fast(output_tokens=20))
    body = {"contents": USER, "generationConfig": {"maxOutputTokens": 3}}
    _, data = await post(gen_url(sim.base_url), body, HEADERS)
    assert data["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert data["usageMetadata"]["candidatesTokenCount"] == 3


async def test_stream_sse_frames(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini", fast(output_tokens=10))
    _, whole = await post(gen_url(sim.base_url), {"contents": USER}, HEADERS)
    url = gen_url(sim.base_url, method="streamGenerateContent") + "?alt=sse"
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, json={"contents": USER}, headers=HEADERS) as r,
    ):
        assert r.headers["Content-Type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    frames = [json.loads(f[len("data: ") :]) for f in raw.strip().split("\r\n\r\n")]
    assert len(frames) == 3  # 10 tokens in groups of 4
    text = "".join(f["candidates"][0]["content"]["parts"][0]["text"] for f in frames)
    assert text == whole["candidates"][0]["content"]["parts"][0]["text"]
    assert "finishReason" not in frames[0]["candidates"][0]
    assert frames[-1]["candidates"][0]["finishReason"] == "STOP"
    assert frames[-1]["usageMetadata"] == whole["usageMetadata"]


async def test_stream_without_sse_is_a_json_array(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini", fast(output_tokens=5))
    url = gen_url(sim.base_url, method="streamGenerateContent")
    status, data = await post(url, {"contents": USER}, HEADERS)
    assert status == 200 and isinstance(data, list) and len(data) == 2


async def test_function_call_then_text(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini")
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": "find",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"q": {"type": "STRING"}, "n": {"type": "NUMBER"}},
                        "required": ["q", "n"],
                    },
                },
                {"name": "other"},
            ]
        }
    ]
    _, data = await post(gen_url(sim.base_url), {"contents": USER, "tools": tools}, HEADERS)
    part = data["candidates"][0]["content"]["parts"][0]
    assert part["functionCall"] == {"name": "find", "args": {"q": "sim", "n": 1}}
    config = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["other"]}}
    _, named = await post(
        gen_url(sim.base_url), {"contents": USER, "tools": tools, "toolConfig": config}, HEADERS
    )
    assert named["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "other"
    follow = [
        *USER,
        {"role": "model", "parts": [part]},
        {"role": "user", "parts": [{"functionResponse": {"name": "find", "response": {"r": 1}}}]},
    ]
    _, after = await post(gen_url(sim.base_url), {"contents": follow, "tools": tools}, HEADERS)
    assert "text" in after["candidates"][0]["content"]["parts"][0]


async def test_json_mime_type(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini")
    schema = {"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN"}}, "required": ["ok"]}
    for config in (
        {"responseMimeType": "application/json"},
        {"responseMimeType": "application/json", "responseSchema": schema},
    ):
        body = {"contents": USER, "generationConfig": config}
        _, data = await post(gen_url(sim.base_url), body, HEADERS)
        value = json.loads(data["candidates"][0]["content"]["parts"][0]["text"])
        assert isinstance(value, dict)
    assert value == {"ok": True}


async def test_thinking_reports_thoughts(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini", fast(reasoning_tokens=9, output_tokens=4))
    config = {"thinkingConfig": {"thinkingBudget": 5, "includeThoughts": True}}
    _, data = await post(
        gen_url(sim.base_url), {"contents": USER, "generationConfig": config}, HEADERS
    )
    usage = data["usageMetadata"]
    assert usage["thoughtsTokenCount"] == 5 and usage["candidatesTokenCount"] == 4
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 9
    parts = data["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and "thought" not in parts[1]
    off = {"thinkingConfig": {"thinkingBudget": 0}}
    _, plain = await post(
        gen_url(sim.base_url), {"contents": USER, "generationConfig": off}, HEADERS
    )
    assert "thoughtsTokenCount" not in plain["usageMetadata"]


async def test_implicit_cache_and_images(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini", fast(cache_min_tokens=128, cache_block_tokens=32))
    doc = "".join(tx.words(tx.rng_for("gdoc"), 400))
    image = {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}
    first = [{"role": "user", "parts": [{"text": doc}, image, {"text": "q1"}]}]
    second = [{"role": "user", "parts": [{"text": doc}, image, {"text": "q2 and more"}]}]
    _, one = await post(gen_url(sim.base_url), {"contents": first}, HEADERS)
    _, two = await post(gen_url(sim.base_url), {"contents": second}, HEADERS)
    assert "cachedContentTokenCount" not in one["usageMetadata"]
    cached = two["usageMetadata"]["cachedContentTokenCount"]
    assert cached % 32 == 0 and 400 + 85 - 32 < cached <= two["usageMetadata"]["promptTokenCount"]
    details = {d["modality"]: d["tokenCount"] for d in one["usageMetadata"]["promptTokensDetails"]}
    assert details["IMAGE"] == 85


async def test_embeddings_and_count_tokens(make_sim: MakeSim) -> None:
    sim = await make_sim("gemini")
    base = sim.base_url
    content = {"parts": [{"text": "embed me"}]}
    _, one = await post(
        gen_url(base, "gemini-embedding-001", "embedContent"), {"content": content}, HEADERS
    )
    assert len(one["embedding"]["values"]) == 3072
    batch = {
        "requests": [
            {"model": "models/text-embedding-004", "content": content, "outputDimensionality": 16},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "other"}]}},
        ]
    }
    _, many = await post(gen_url(base, "text-embedding-004", "batchEmbedContents"), batch, HEADERS)
    assert [len(e["values"]) for e in many["embeddings"]] == [16, 768]
    _, counted = await post(gen_url(base, method="countTokens"), {"contents": USER}, HEADERS)
    _, data = await post(gen_url(base), {"contents": USER}, HEADERS)
    assert counted["totalTokens"] == data["usageMetadata"]["promptTokenCount"]
    status, err = await post(gen_url(base, method="noSuchMethod"), {}, HEADERS)
    assert status == 404 and err["error"]["status"] == "NOT_FOUND"
    status, err = await post(gen_url(base), {"contents": []}, HEADERS)
    assert status == 400 and err["error"]["status"] == "INVALID_ARGUMENT"
