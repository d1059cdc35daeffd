"""Deterministic content for the simulated providers: words, JSON values, embeddings.

Every word of `VOCABULARY` is one o200k token both with and without a leading space, so a
reply of N words is exactly N tokens and its usage can be reported without guessing.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
import warnings
from functools import cache
from typing import Any

_WORDS = (
    "river stone light cloud forest silver garden window quiet bright simple rapid steady "
    "winter summer spring signal pattern circle bridge market letter number answer question "
    "reason method system network station engine paper table music story mirror shadow rocket "
    "planet orbit amber anchor echo ember pine oak olive bread water fire earth wind metal wood "
    "glass iron gold wave field path road city tower castle"
)
VOCABULARY = _WORDS.split()

IMAGE_TOKENS = 85


@cache
def _encoding() -> Any:
    # bpe_openai loads its data with importlib.resources.open_binary, deprecated since 3.11;
    # the warning is theirs, and the test suite turns warnings into errors.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding("o200k_base")


def encode(text: str) -> list[int]:
    """o200k token ids of `text`; special-token strings are treated as plain text."""
    if not text:
        return []
    ids: list[int] = _encoding().encode_ordinary(text)
    return ids


def token_pieces(text: str) -> list[str]:
    """`text` split at its token boundaries (for ASCII text, whose tokens decode alone)."""
    enc = _encoding()
    return [enc.decode([t]) for t in encode(text)]


def count_tokens(text: str) -> int:
    """Number of o200k tokens in `text`."""
    return len(encode(text))


def rng_for(*parts: object) -> random.Random:
    """A random generator seeded by a stable digest of `parts` (not Python's salted hash)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def words(rng: random.Random, n: int) -> list[str]:
    """`n` one-token pieces that concatenate into readable text (first without a space)."""
    picked = rng.choices(VOCABULARY, k=n)
    return [w if i == 0 else " " + w for i, w in enumerate(picked)]


def split_pieces(text: str, n: int) -> list[str]:
    """`text` cut into at most `n` non-empty consecutive pieces (for streamed arguments)."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size = math.ceil(len(text) / n)
    return [text[i : i + size] for i in range(0, len(text), size)]


def value_for_schema(schema: Any, rng: random.Random, depth: int = 0, root: Any = None) -> Any:
    """A value valid against a (simple) JSON schema: strings "sim", numbers 1, booleans true.

    Handles `$ref` into `$defs`/`definitions`, `anyOf`/`oneOf`/`allOf` (first branch), `enum`,
    `const`, `default`, and Gemini's upper-case type names. Objects get their required
    properties, or every property when none is marked required.
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 8:
        return "sim"
    if "$ref" in schema:
        return value_for_schema(_resolve(root, schema["$ref"]), rng, depth + 1, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            branches = [b for b in schema[key] if _type_of(b) != "null"] or schema[key]
            return value_for_schema(branches[0], rng, depth + 1, root)
    kind = _type_of(schema)
    if kind == "object" or (kind is None and "properties" in schema):
        props: dict[str, Any] = schema.get("properties") or {}
        names = schema.get("required") or list(props)
        return {name: value_for_schema(props.get(name, {}), rng, depth + 1, root) for name in names}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [value_for_schema(schema.get("items", {}), rng, depth + 1, root)] * count
    if kind in ("number", "integer"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = 1 if low is None or low < 1 else math.ceil(low) + 1
        high = schema.get("maximum")
        return high if high is not None and value > high else value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "sim"


def _type_of(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    return str(kind).lower() if kind is not None else None


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for part in ref.lstrip("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def embedding(text: str, dims: int, model: str) -> list[float]:
    """A unit vector determined by (model, text): equal texts embed equally."""
    values: list[float] = []
    counter = 0
    while len(values) < dims:
        block = hashlib.blake2b(f"{model}\x00{counter}\x00{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    vec = values[:dims]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def pack_float32(vec: list[float]) -> bytes:
    """Little-endian float32 bytes, as OpenAI's `encoding_format: base64` carries them."""
    return struct.pack(f"<{len(vec)}f", *vec)
