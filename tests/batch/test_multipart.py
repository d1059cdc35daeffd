"""The multipart parser reads what the HTTP client the OpenAI SDK uses writes, byte for byte."""

from __future__ import annotations

import httpx2 as httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.errors import BadRequest
from tokenway.gateway.multipart import MAX_HEADER_BYTES, boundary_of, parse

# Names and filenames as clients send them: any text but control characters (which HTML5 form
# encoding turns into %XX escapes a server cannot tell from literal text) and '%' itself.
_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="%"),
    min_size=1,
    max_size=20,
)


def _encode(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST",
        "http://gateway/v1/files",
        data=fields,
        files=[(name, (filename, content)) for name, filename, content in files],
    )
    return request.read(), request.headers["content-type"]


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(_text, st.text(max_size=40), max_size=4),
    st.lists(st.tuples(_text, _text, st.binary(max_size=300)), min_size=1, max_size=3),
)
def test_what_httpx_encodes_parses_back(
    fields: dict[str, str], files: list[tuple[str, str, bytes]]
) -> None:
    body, content_type = _encode(fields, files)
    parts = parse(body, boundary_of(content_type))
    got_fields = [(p.name, p.data.decode()) for p in parts if p.filename is None]
    got_files = [(p.name, p.filename, p.data) for p in parts if p.filename is not None]
    assert got_fields == list(fields.items())
    assert got_files == files


def test_content_that_looks_like_a_delimiter_stays_content() -> None:
    content = b"line\r\n--\r\n--not-the-boundary--\r\n\r\n"
    body, content_type = _encode({"purpose": "batch"}, [("file", "a.jsonl", content)])
    parts = parse(body, boundary_of(content_type))
    assert [(p.name, p.data) for p in parts] == [("purpose", b"batch"), ("file", content)]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "multipart/form-data", "multipart/form-data; boundary="],
)
def test_a_content_type_without_a_boundary_is_refused(content_type: str | None) -> None:
    with pytest.raises(BadRequest):
        boundary_of(content_type)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\nno end',
        b"--b\r\nno header end",
        b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
        b"--b\r\nContent-Disposition: attachment\r\n\r\nx\r\n--b--\r\n",
        b'--b\r\nContent-Disposition: form-data; name="x\r\n\r\nx\r\n--b--\r\n',
        b"--bXX",
    ],
)
def test_malformed_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse(body, b"b")


def test_part_headers_past_the_cap_are_refused() -> None:
    # a name of the cap's length alone takes the headers over it
    body, content_type = _encode({"n" * MAX_HEADER_BYTES: "x"}, [("file", "a.jsonl", b"x")])
    with pytest.raises(BadRequest, match="headers exceed"):
        parse(body, boundary_of(content_type))
