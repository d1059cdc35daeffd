"""Field checks shared by the request parsers, and lenient number reading for provider usage.

Every check raises `BadRequest` whose message starts with the field path, and whose `param` is
that path, so a client sees exactly which field is wrong.
"""

from __future__ import annotations

import math
from typing import Any

from tokenway.errors import BadRequest, Unsupported


def unsupported(message: str, param: str) -> Unsupported:
    """The error for a valid field that only a same-protocol upstream can take; raise it."""
    return Unsupported(f"{param}: {message}", param=param)


def fail(message: str, param: str) -> BadRequest:
    """The error for field `param`; raise it."""
    return BadRequest(f"{param}: {message}", param=param)


def get_str(obj: dict[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    """`obj[key]` as a string, None when absent (an error when `required`)."""
    v = obj.get(key)
    if v is None:
        if required:
            raise fail("is required", path)
        return None
    if not isinstance(v, str):
        raise fail(f"must be a string, got {type(v).__name__}", path)
    return v


def get_num(obj: dict[str, Any], key: str, path: str) -> float | None:
    """`obj[key]` as a float (ints accepted, booleans refused), None when absent."""
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise fail(f"must be a number, got {type(v).__name__}", path)
    return float(v)


def get_bool(obj: dict[str, Any], key: str, path: str) -> bool | None:
    """`obj[key]` as a boolean, None when absent."""
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        raise fail(f"must be a boolean, got {type(v).__name__}", path)
    return v


def get_pos_int(obj: dict[str, Any], key: str, path: str) -> int | None:
    """`obj[key]` as an integer > 0, None when absent."""
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise fail(f"must be an integer, got {type(v).__name__}", path)
    if v <= 0:
        raise fail(f"must be greater than 0, got {v}", path)
    return v


def get_dict(obj: dict[str, Any], key: str, path: str) -> dict[str, Any] | None:
    """`obj[key]` as an object, None when absent."""
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise fail(f"must be an object, got {type(v).__name__}", path)
    return v


def get_list(obj: dict[str, Any], key: str, path: str) -> list[Any] | None:
    """`obj[key]` as a list, None when absent."""
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, list):
        raise fail(f"must be a list, got {type(v).__name__}", path)
    return v


def tok(v: Any) -> int:
    """A token count reported by a provider: missing, null, negative or junk counts as 0."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return 0
    if isinstance(v, float) and not math.isfinite(v):
        return 0
    return max(int(v), 0)


def sub(d: Any, key: str) -> Any:
    """`d[key]` when `d` is an object, else None (for optional nested usage details)."""
    return d.get(key) if isinstance(d, dict) else None
