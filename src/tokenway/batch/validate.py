"""A batch input file, checked as OpenAI checks it before a batch runs.

The file is JSONL: each non-blank line one request, `{"custom_id": "...", "method": "POST",
"url": "/v1/chat/completions", "body": {...}}`. Every line must parse as a JSON object; have a
non-empty `custom_id` (with no U+0000 in it) no other line has; `method` POST; a `url`
tokenway runs (chat completions, embeddings, responses) equal to the batch's `endpoint`; a
`body` object whose `model` is the same on every line and one the key may use. A file with no
request, or more than `max_lines`, is refused too. Any error fails the whole batch, with up to
`MAX_ERRORS` errors naming their 1-based line (`line`, `code`, `message`, `param`, as OpenAI's
`errors.data`).

A request's body is kept as compact JSON with `stream` and `stream_options` removed: a batch
answer is always whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

__all__ = ["ENDPOINTS", "MAX_ERRORS", "LineError", "Parsed", "Request", "validate"]

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")
"""The endpoints a batch may target."""

MAX_ERRORS = 100
MAX_CUSTOM_ID = 512

_decode = msgspec.json.decode
_encode = msgspec.json.encode


class LineError(msgspec.Struct, frozen=True, kw_only=True):
    """One validation error, in the shape of OpenAI's `BatchError`."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class Request(NamedTuple):
    """A valid request line: its 1-based line number, `custom_id` and body (compact JSON)."""

    line: int
    custom_id: str
    body: bytes


class Parsed(NamedTuple):
    """The file's requests and their model, or the errors that fail the batch."""

    requests: list[Request]
    model: str | None
    errors: list[LineError]


class _Stop(Exception):
    pass


def validate(
    content: bytes,
    endpoint: str,
    max_lines: int,
    check_model: Callable[[str], str | None],
) -> Parsed:
    """Check `content` for a batch on `endpoint`; `check_model(name)` says why a model may not
    be used (None: it may)."""
    requests: list[Request] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    model: str | None = None
    model_line = 0

    def fail(line: int | None, code: str, message: str, param: str | None = None) -> None:
        errors.append(LineError(code=code, message=message, param=param, line=line))
        if len(errors) >= MAX_ERRORS:
            raise _Stop

    try:
        for number, raw in enumerate(content.split(b"\n"), start=1):
            text = raw.strip()
            if not text:
                continue
            if len(requests) + len(errors) >= max_lines:
                fail(
                    number,
                    "too_many_lines",
                    f"The file has more than the {max_lines} requests a batch may hold.",
                )
                break
            try:
                doc: Any = _decode(text)
            except (ValueError, RecursionError):  # malformed JSON or UTF-8
                fail(number, "invalid_json_line", "This line is not parseable as valid JSON.")
                continue
            if not isinstance(doc, dict):
                fail(number, "invalid_json_line", "This line is not a JSON object.")
                continue
            problem = _check_line(doc, endpoint)
            if problem is not None:
                fail(number, *problem)
                continue
            custom_id: str = doc["custom_id"]
            body: dict[str, Any] = doc["body"]
            if custom_id in seen:
                fail(
                    number,
                    "duplicate_custom_id",
                    f"The custom_id {custom_id!r} is already used on line {seen[custom_id]}; "
                    "each request in a batch needs its own custom_id.",
                    "custom_id",
                )
                continue
            seen[custom_id] = number
            name = body["model"]
            if model is None:
                model, model_line = name, number
                why = check_model(name)
                if why is not None:
                    fail(number, "model_not_found", why, "body.model")
            elif name != model:
                fail(
                    number,
                    "mismatched_model",
                    f"The model {name!r} differs from {model!r} on line {model_line}; every "
                    "request in a batch must use the same model.",
                    "body.model",
                )
                continue
            body.pop("stream", None)
            body.pop("stream_options", None)
            requests.append(Request(number, custom_id, _encode(body)))
    except _Stop:
        pass
    if not requests and not errors:
        errors.append(LineError(code="empty_file", message="The input file has no requests."))
    return Parsed(requests if not errors else [], model, errors)


def _check_line(doc: dict[str, Any], endpoint: str) -> tuple[str, str, str] | None:
    """(code, message, param) of the first thing wrong with a request line's envelope."""
    for name in ("custom_id", "method", "url", "body"):
        if name not in doc:
            return (
                "missing_required_parameter",
                f"The request line is missing the required field '{name}'.",
                name,
            )
    custom_id = doc["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        return ("invalid_value", "'custom_id' must be a non-empty string.", "custom_id")
    if len(custom_id) > MAX_CUSTOM_ID:
        return (
            "invalid_value",
            f"'custom_id' is longer than {MAX_CUSTOM_ID} characters.",
            "custom_id",
        )
    # The job store keeps custom_id as text, which on PostgreSQL cannot hold U+0000: the
    # batch could never start (its lines could not be written), so it is refused here.
    if "\x00" in custom_id:
        return (
            "invalid_value",
            "'custom_id' must not contain NUL (U+0000) characters.",
            "custom_id",
        )
    if doc["method"] != "POST":
        return ("invalid_value", "'method' must be POST.", "method")
    url = doc["url"]
    if url not in ENDPOINTS:
        return (
            "invalid_url",
            f"The url {url!r} is not supported; expected one of {', '.join(ENDPOINTS)}.",
            "url",
        )
    if url != endpoint:
        return (
            "invalid_url",
            f"The url {url!r} does not match the batch's endpoint {endpoint!r}.",
            "url",
        )
    body = doc["body"]
    if not isinstance(body, dict):
        return ("invalid_value", "'body' must be a JSON object.", "body")
    model = body.get("model")
    if model is None:
        return (
            "missing_required_parameter",
            "The request body is missing the required field 'model'.",
            "body.model",
        )
    if not isinstance(model, str) or not model:
        return ("invalid_value", "'body.model' must be a non-empty string.", "body.model")
    return None
