"""Embeddings: OpenAI client API parsing/encoding and the Gemini upstream shape."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.domain.types import EmbeddingRequest, EmbeddingResponse, Usage
from tokenway.errors import BadRequest, UpstreamError
from tokenway.translate.embeddings import (
    decode_vector_base64,
    encode_gemini_request,
    encode_openai_request,
    encode_openai_response,
    encode_vector_base64,
    parse_gemini_response,
    parse_openai_request,
    parse_openai_response,
)


def test_parse_request_string_and_list() -> None:
    req = parse_openai_request({"model": "emb", "input": "hello"})
    assert req == EmbeddingRequest(model="emb", input=["hello"])
    req = parse_openai_request(
        {
            "model": "emb",
            "input": ["a", "b"],
            "dimensions": 256,
            "encoding_format": "base64",
            "user": "u-1",
        }
    )
    assert req == EmbeddingRequest(
        model="emb",
        input=["a", "b"],
        dimensions=256,
        encoding_format="base64",
        extras={"user": "u-1"},
    )


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"input": "x"}, "model", "model"),
        ({"model": "", "input": "x"}, "model", "model"),
        ({"model": "e"}, "input", "required"),
        ({"model": "e", "input": ""}, "input", "empty"),
        ({"model": "e", "input": []}, "input", "empty"),
        ({"model": "e", "input": ["a", ""]}, "input", "empty"),
        ({"model": "e", "input": [1, 2, 3]}, "input", "token arrays are not supported"),
        ({"model": "e", "input": [[1, 2], [3]]}, "input", "token arrays are not supported"),
        ({"model": "e", "input": {"text": "x"}}, "input", "string"),
        ({"model": "e", "input": ["a", None]}, "input", "string"),
        ({"model": "e", "input": "x", "dimensions": 0}, "dimensions", "positive"),
        ({"model": "e", "input": "x", "dimensions": "8"}, "dimensions", "positive"),
        ({"model": "e", "input": "x", "encoding_format": "int8"}, "encoding_format", "base64"),
    ],
)
def test_parse_request_rejects(body: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as exc:
        parse_openai_request(body)
    assert exc.value.param == param
    assert exc.value.status == 400


def test_encode_openai_request() -> None:
    req = EmbeddingRequest(
        model="alias",
        input=["a"],
        dimensions=64,
        encoding_format="base64",
        extras={"user": "u", "model": "ignored"},
    )
    assert encode_openai_request(req, "text-embedding-3-small") == {
        "user": "u",
        "model": "text-embedding-3-small",
        "input": ["a"],
        "dimensions": 64,
        "encoding_format": "base64",
    }
    plain = EmbeddingRequest(model="alias", input=["a", "b"])
    assert encode_openai_request(plain, "m") == {"model": "m", "input": ["a", "b"]}


def test_parse_openai_response_floats_and_base64_in_index_order() -> None:
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": encode_vector_base64([0.5, -2.0])},
            {"object": "embedding", "index": 0, "embedding": [1, 0.25]},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    resp = parse_openai_response(body)
    assert resp == EmbeddingResponse(
        model="text-embedding-3-small",
        vectors=[[1.0, 0.25], [0.5, -2.0]],
        usage=Usage(input_tokens=7),
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": "x"},
        {"data": [{"embedding": "not base64!"}]},
        {"data": [{"embedding": base64.b64encode(b"abc").decode()}]},
        {"data": [{"embedding": [1, "2"]}]},
        {"data": [{"embedding": None}]},
    ],
)
def test_parse_openai_response_rejects_malformed(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError):
        parse_openai_response(body)


def test_encode_openai_response_golden() -> None:
    resp = EmbeddingResponse(model="x", vectors=[[1.0, -0.5]], usage=Usage(input_tokens=3))
    assert encode_openai_response(resp, "emb", None) == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [1.0, -0.5]}],
        "model": "emb",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    b64 = encode_openai_response(resp, "emb", "base64")["data"][0]["embedding"]
    assert base64.b64decode(b64) == struct.pack("<2f", 1.0, -0.5)


_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(st.lists(st.lists(_float32, max_size=16), min_size=1, max_size=4))
def test_base64_round_trip_through_the_client_shape(vectors: list[list[float]]) -> None:
    resp = EmbeddingResponse(model="m", vectors=vectors, usage=Usage(input_tokens=1))
    wire = encode_openai_response(resp, "m", "base64")
    assert all(isinstance(d["embedding"], str) for d in wire["data"])
    assert parse_openai_response(wire).vectors == vectors


@given(st.binary(max_size=64).filter(lambda b: len(b) % 4 == 0))
def test_base64_bytes_round_trip(raw: bytes) -> None:
    floats = decode_vector_base64(base64.b64encode(raw).decode())
    if all(f == f for f in floats):  # NaN payloads may not survive float conversion
        assert base64.b64decode(encode_vector_base64(floats)) == raw


async def test_openai_sdk_round_trip_over_http() -> None:
    # The official SDK asks for base64 by default and decodes it itself.
    from aiohttp import web
    from openai import AsyncOpenAI

    seen: list[EmbeddingRequest] = []

    async def handler(request: web.Request) -> web.Response:
        req = parse_openai_request(await request.json())
        seen.append(req)
        vectors = [[0.125 * i, -3.0, 1e-3] for i, _ in enumerate(req.input)]
        resp = EmbeddingResponse(model="m", vectors=vectors, usage=Usage(input_tokens=5))
        return web.json_response(encode_openai_response(resp, req.model, req.encoding_format))

    app = web.Application()
    app.router.add_post("/v1/embeddings", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k") as client:
            out = await client.embeddings.create(model="emb", input=["a", "b"])
            floats = await client.embeddings.create(model="emb", input="c", encoding_format="float")
    finally:
        await runner.cleanup()
    assert [r.encoding_format for r in seen] == ["base64", "float"]
    assert [d.embedding for d in out.data] == [
        [0.0, -3.0, struct.unpack("<f", struct.pack("<f", 1e-3))[0]],
        [0.125, -3.0, struct.unpack("<f", struct.pack("<f", 1e-3))[0]],
    ]
    assert floats.data[0].embedding == [0.0, -3.0, 1e-3]
    assert out.usage.prompt_tokens == 5 and out.model == "emb"


def test_gemini_request_and_response() -> None:
    req = EmbeddingRequest(model="alias", input=["a", "b"], dimensions=768)
    assert encode_gemini_request(req, "gemini-embedding-001") == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "a"}]},
                "outputDimensionality": 768,
            },
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "b"}]},
                "outputDimensionality": 768,
            },
        ]
    }
    plain = encode_gemini_request(EmbeddingRequest(model="a", input=["x"]), "models/e")
    assert plain == {"requests": [{"model": "models/e", "content": {"parts": [{"text": "x"}]}}]}

    body = {"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0]}]}
    resp = parse_gemini_response(body, "gemini-embedding-001", 4)
    assert resp == EmbeddingResponse(
        model="gemini-embedding-001",
        vectors=[[0.1, 0.2], [0.3, 0.0]],
        usage=Usage(input_tokens=4, source="estimated"),
    )
    with pytest.raises(UpstreamError):
        parse_gemini_response({"embeddings": [{"values": "x"}]}, "g", 1)
