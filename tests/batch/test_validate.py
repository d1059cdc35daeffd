"""Input-file validation, as a parser: valid files come through whole, and each kind of bad
line is reported on its own line number."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.batch.validate import validate

URL = "/v1/chat/completions"


def _ok(_model: str) -> str | None:
    return None


def _line(custom_id: str, text: str = "hi", **body: Any) -> str:
    doc = {
        "custom_id": custom_id,
        "method": "POST",
        "url": URL,
        "body": {"model": "m", "messages": [{"role": "user", "content": text}], **body},
    }
    return json.dumps(doc)


# Any text but U+0000, which PostgreSQL text cannot hold (a custom_id is stored as text), and
# lone surrogates, which JSON cannot carry.
_id_chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
_ids = st.lists(st.text(_id_chars, min_size=1, max_size=12), min_size=1, max_size=30, unique=True)


@settings(max_examples=150, deadline=None)
@given(_ids, st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_a_valid_file_yields_every_request_in_order(
    ids: list[str], newline: str, trailing: bool
) -> None:
    content = newline.join(_line(c, stream=True) for c in ids) + (newline if trailing else "")
    parsed = validate(content.encode(), URL, 1000, _ok)
    assert parsed.errors == []
    assert parsed.model == "m"
    assert [r.custom_id for r in parsed.requests] == ids
    assert [r.line for r in parsed.requests] == list(range(1, len(ids) + 1))
    for r in parsed.requests:
        body = msgspec.json.decode(r.body)
        assert "stream" not in body and body["model"] == "m"


BAD_LINES = {
    "invalid_json_line": ('{"custom_id": ', None),
    "not_an_object": ("[1, 2]", None),
    "missing_required_parameter": (
        json.dumps({"method": "POST", "url": URL, "body": {"model": "m"}}),
        "custom_id",
    ),
    "invalid_value": (
        json.dumps({"custom_id": "z", "method": "PUT", "url": URL, "body": {}}),
        "method",
    ),
    "invalid_url": (
        json.dumps({"custom_id": "z", "method": "POST", "url": "/v1/x", "body": {"model": "m"}}),
        "url",
    ),
    "mismatched_model": (
        json.dumps({"custom_id": "z", "method": "POST", "url": URL, "body": {"model": "n"}}),
        "body.model",
    ),
}
CODES = {"not_an_object": "invalid_json_line"}


@settings(max_examples=150, deadline=None)
@given(_ids.filter(lambda ids: "z" not in ids), st.data())
def test_one_bad_line_is_named_by_its_number(ids: list[str], data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(BAD_LINES)))
    at = data.draw(st.integers(min_value=1, max_value=len(ids)))  # keep line 1 valid
    lines = [_line(c) for c in ids]
    bad, param = BAD_LINES[kind]
    lines.insert(at, bad)
    parsed = validate("\n".join(lines).encode(), URL, 1000, _ok)
    assert parsed.requests == []
    (error,) = parsed.errors
    assert (error.line, error.code, error.param) == (at + 1, CODES.get(kind, kind), param)


def test_duplicates_empty_files_limits_and_unknown_models() -> None:
    dup = validate(f"{_line('a')}\n\n{_line('a')}\n".encode(), URL, 10, _ok)
    assert [(e.line, e.code) for e in dup.errors] == [(3, "duplicate_custom_id")]
    empty = validate(b"\n \n", URL, 10, _ok)
    assert [(e.line, e.code) for e in empty.errors] == [(None, "empty_file")]
    many = validate("\n".join(_line(str(i)) for i in range(5)).encode(), URL, 3, _ok)
    assert [(e.line, e.code) for e in many.errors] == [(4, "too_many_lines")]
    unknown = validate(_line("a").encode(), URL, 10, lambda m: f"no model {m}")
    assert [(e.line, e.code, e.message) for e in unknown.errors] == [
        (1, "model_not_found", "no model m")
    ]
    wrong = validate(_line("a").encode(), "/v1/embeddings", 10, _ok)
    assert [(e.code, e.param) for e in wrong.errors] == [("invalid_url", "url")]
    bad_utf8 = validate(b'{"custom_id": "\xff"}', URL, 10, _ok)
    assert [e.code for e in bad_utf8.errors] == ["invalid_json_line"]


def test_a_custom_id_with_nul_is_refused() -> None:
    # on PostgreSQL the batch could never have started: its lines could not be stored
    content = "\n".join([_line("a"), _line("b\x00c")])
    parsed = validate(content.encode(), URL, 10, _ok)
    assert parsed.requests == []
    assert [(e.line, e.code, e.param) for e in parsed.errors] == [(2, "invalid_value", "custom_id")]
    assert "NUL" in parsed.errors[0].message
