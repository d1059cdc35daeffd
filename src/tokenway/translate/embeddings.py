"""Embeddings: the OpenAI client API, and the OpenAI and Gemini upstream encodings.

Vectors travel as JSON float lists or, when asked for `encoding_format: "base64"` (which the
official openai SDK does by default), as base64 of little-endian float32 values.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from tokenway.domain.types import JSON, EmbeddingRequest, EmbeddingResponse, Usage
from tokenway.errors import BadRequest, UpstreamError

_FORMATS = ("float", "base64")
# No embedding model offers more; a bound keeps a client from asking for a gigantic vector.
MAX_DIMENSIONS = 65536
_KNOWN = frozenset({"model", "input", "dimensions", "encoding_format"})


def _parse_input(value: Any) -> list[str]:
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise BadRequest("input must be a string or an array of strings", param="input")
    if not items:
        raise BadRequest("input must not be empty", param="input")
    for item in items:
        if isinstance(item, int | list):
            raise BadRequest("token arrays are not supported", param="input")
        if not isinstance(item, str):
            raise BadRequest("input must be a string or an array of strings", param="input")
        if not item:
            raise BadRequest("input must not contain empty strings", param="input")
    return items


def parse_openai_request(body: dict[str, Any]) -> EmbeddingRequest:
    """An `EmbeddingRequest` from an OpenAI `/v1/embeddings` body; unknown fields go to extras.

    Raises `BadRequest` (with `param`) for a missing model, empty or token-array input, and
    malformed `dimensions` or `encoding_format`.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required", param="model")
    if "input" not in body:
        raise BadRequest("input is required", param="input")
    inputs = _parse_input(body["input"])
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise BadRequest("dimensions must be a positive integer", param="dimensions")
    if dims is not None and dims > MAX_DIMENSIONS:
        raise BadRequest(f"dimensions must be at most {MAX_DIMENSIONS}", param="dimensions")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in _FORMATS:
        raise BadRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
    return EmbeddingRequest(
        model=model,
        input=inputs,
        dimensions=dims,
        encoding_format=fmt,
        extras={k: v for k, v in body.items() if k not in _KNOWN},
    )


def encode_openai_request(req: EmbeddingRequest, model: str) -> dict[str, Any]:
    """An OpenAI `/v1/embeddings` body for an upstream model (extras forwarded)."""
    body: JSON = {**req.extras, "model": model, "input": list(req.input)}
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    if req.encoding_format is not None:
        body["encoding_format"] = req.encoding_format
    return body


def encode_vector_base64(vector: list[float]) -> str:
    """Base64 of `vector` as little-endian float32."""
    try:
        raw = struct.pack(f"<{len(vector)}f", *vector)
    except OverflowError as exc:
        raise UpstreamError("embedding value out of float32 range") from exc
    return base64.b64encode(raw).decode("ascii")


def decode_vector_base64(data: str) -> list[float]:
    """The floats of a base64 little-endian float32 string."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UpstreamError("embedding is not valid base64") from exc
    if len(raw) % 4:
        raise UpstreamError("embedding base64 is not a whole number of float32 values")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _vector(value: Any) -> list[float]:
    if isinstance(value, str):
        return decode_vector_base64(value)
    if isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        return [float(v) for v in value]
    raise UpstreamError("malformed embedding in upstream response")


def parse_openai_response(body: dict[str, Any]) -> EmbeddingResponse:
    """An `EmbeddingResponse` from an OpenAI embeddings answer, vectors in `index` order."""
    data = body.get("data")
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UpstreamError("malformed embeddings response from upstream")
    ordered = sorted(
        enumerate(data),
        key=lambda p: p[1]["index"] if isinstance(p[1].get("index"), int) else p[0],
    )
    usage = body.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    model = body.get("model")
    return EmbeddingResponse(
        model=model if isinstance(model, str) else "",
        vectors=[_vector(d.get("embedding")) for _, d in ordered],
        usage=Usage(input_tokens=max(0, tokens) if isinstance(tokens, int) else 0),
    )


def encode_openai_response(
    resp: EmbeddingResponse, model: str, encoding_format: str | None
) -> dict[str, Any]:
    """The OpenAI embeddings answer for a client; base64 vectors when it asked for them."""
    b64 = encoding_format == "base64"
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": i,
                "embedding": encode_vector_base64(v) if b64 else v,
            }
            for i, v in enumerate(resp.vectors)
        ],
        "model": model,
        "usage": {
            "prompt_tokens": resp.usage.input_tokens,
            "total_tokens": resp.usage.input_tokens,
        },
    }


def encode_gemini_request(req: EmbeddingRequest, model: str) -> dict[str, Any]:
    """A Gemini `batchEmbedContents` body: one request per input text."""
    name = model if model.startswith("models/") else f"models/{model}"
    requests: list[JSON] = []
    for text in req.input:
        item: JSON = {"model": name, "content": {"parts": [{"text": text}]}}
        if req.dimensions is not None:
            item["outputDimensionality"] = req.dimensions
        requests.append(item)
    return {"requests": requests}


def parse_gemini_response(body: dict[str, Any], model: str, input_tokens: int) -> EmbeddingResponse:
    """An `EmbeddingResponse` from a `batchEmbedContents` answer.

    Gemini reports no usage, so `input_tokens` (a local tokenizer count) is used, marked
    as estimated.
    """
    items = body.get("embeddings")
    if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
        raise UpstreamError("malformed embeddings response from upstream")
    return EmbeddingResponse(
        model=model,
        vectors=[_vector(e.get("values")) for e in items],
        usage=Usage(input_tokens=max(0, input_tokens), source="estimated"),
    )
