"""Fuzzing `/v1/files*` and `/v1/batches*` over HTTP, on SQLite and on PostgreSQL: multipart
uploads that are truncated, lack a boundary or a file part, have odd purposes, huge field
names or non-UTF-8 filenames; batch bodies with wrong types, unknown or another key's files,
odd metadata, endpoints and windows; odd ids and query parameters; input files with odd lines.
Whatever arrives, the gateway answers 2xx or an OpenAI-shaped 4xx, logs no error and no
secret, every batch it accepts gets past validation, and it keeps serving.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.http_fuzz import (
    Api,
    backend_fixtures,
    fuzz,
    json_values,
    odd_ids,
    odd_text,
    repeated,
)

from .conftest import BROKE_KEY, KEY, OTHER_KEY, chat_line, jsonl, stack_doc

SECRETS = [KEY, OTHER_KEY, BROKE_KEY]
ENDPOINT = "/v1/chat/completions"


class BatchApi(Api):
    """The gateway, with the Files and Batches calls the fuzz builds on."""

    def upload(self, content: bytes, *, key: str | None = None) -> str:
        status, doc = self.send(
            "POST",
            "/v1/files",
            key=key,
            files={"file": ("in.jsonl", content)},
            data={"purpose": "batch"},
        )
        assert status == 200, doc
        return str(doc["id"])

    def create(self, body: Any, *, key: str | None = None) -> tuple[int, Any]:
        return self.post_json("/v1/batches", body, key=key)

    def settled(self, batch_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The batch once it is past validation (or done); a batch stuck validating fails."""
        end = time.monotonic() + timeout
        while True:
            status, doc = self.send("GET", f"/v1/batches/{batch_id}")
            assert status == 200, doc
            if doc["status"] != "validating":
                return dict(doc)
            assert time.monotonic() < end, f"batch still validating after {timeout}s: {doc}"
            time.sleep(0.05)


def _doc_for(url: str) -> dict[str, Any]:
    return {**stack_doc(Path("unused.db")), "storage": {"ledger": url}}


pg, api = backend_fixtures(BatchApi, _doc_for, SECRETS, [KEY, OTHER_KEY], "files/batches")


@pytest.fixture(scope="module")
def files(api: BatchApi) -> dict[str, str]:
    """Ids of uploaded files: a valid input file of this key, one of the other key's."""
    line = [chat_line("a", "hi")]
    return {"mine": api.upload(jsonl(line)), "theirs": api.upload(jsonl(line), key=OTHER_KEY)}


# ---- multipart bodies -----------------------------------------------------------------------

BOUNDARY = "fuzzboundary7MA4YWxkTrZu0gW"
FILE_BYTES = jsonl([chat_line("a", "hi")])


def _part(name: bytes, filename: bytes | None, data: bytes, extra: bytes) -> bytes:
    disposition = b'form-data; name="' + name + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    head = b"Content-Disposition: " + disposition + b"\r\n" + extra
    return b"--" + BOUNDARY.encode() + b"\r\n" + head + b"\r\n" + data + b"\r\n"


names = st.one_of(
    st.sampled_from(
        [b"file", b"purpose", b"expires_after[anchor]", b"expires_after[seconds]", b""]
    ),
    repeated(b"n", 5000),
    odd_text.map(lambda s: s.encode()),
)
filenames = st.one_of(
    st.none(),
    st.sampled_from([b"in.jsonl", b"\xff\xfe.jsonl", b"a\x00b", b"", b"%22quoted%22"]),
    repeated(b"x", 5000),
    odd_text.map(lambda s: s.replace('"', "").encode()),
)
field_values = st.one_of(
    st.sampled_from(
        [b"batch", b"fine-tune", b"bogus", b"", b"\xff", b"created_at", b"3600", "²".encode()]
    ),
    st.sampled_from([b"9" * 30, b"-3600", b"3600.0", b" 3600"]),
    repeated(b"9", 5000),
    st.binary(max_size=40),
)
parts = st.builds(
    _part,
    names,
    filenames,
    st.one_of(st.just(FILE_BYTES), field_values),
    st.sampled_from([b"", b"Content-Type: application/jsonl\r\n", b"X-Odd: \xff\r\n"]),
)
# Content types: the right one, none, no boundary, a wrong or odd boundary.
content_types = st.sampled_from(
    [
        f"multipart/form-data; boundary={BOUNDARY}".encode(),
        f'multipart/form-data; boundary="{BOUNDARY}"'.encode(),
        b"multipart/form-data",
        b"multipart/form-data; boundary=",
        b"multipart/form-data; boundary=other",
        b'multipart/form-data; boundary="unterminated',
        b"multipart/form-data; boundary=" + b"b" * 300,
        f"multipart/form-data; boundary={BOUNDARY}é".encode(),
        b"application/json",
        b"",
    ]
)


@st.composite
def uploads(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A multipart body (well formed or not) and its Content-Type."""
    body = b"".join(draw(st.lists(parts, max_size=5)))
    if draw(st.booleans()):
        body += b"--" + BOUNDARY.encode() + b"--\r\n"
    how = draw(st.sampled_from(["as is", "as is", "truncated", "LF only", "garbage prefix"]))
    if how == "truncated" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif how == "LF only":
        body = body.replace(b"\r\n", b"\n")
    elif how == "garbage prefix":
        body = draw(st.binary(max_size=20)) + body
    return body, draw(content_types)


@fuzz(200)
@given(upload=uploads())
# each a 500 before: '²' passes str.isdigit but not int(), and so does a run of 5000 digits
@example(
    upload=(
        _part(b"purpose", None, b"batch", b"")
        + _part(b"expires_after[anchor]", None, b"created_at", b"")
        + _part(b"expires_after[seconds]", None, "²".encode(), b"")
        + _part(b"file", b"in.jsonl", FILE_BYTES, b"")
        + f"--{BOUNDARY}--\r\n".encode(),
        f"multipart/form-data; boundary={BOUNDARY}".encode(),
    )
)
@example(
    upload=(
        _part(b"purpose", None, b"batch", b"")
        + _part(b"expires_after[anchor]", None, b"created_at", b"")
        + _part(b"expires_after[seconds]", None, b"9" * 5000, b"")
        + _part(b"file", b"in.jsonl", FILE_BYTES, b"")
        + f"--{BOUNDARY}--\r\n".encode(),
        f"multipart/form-data; boundary={BOUNDARY}".encode(),
    )
)
# a 500 on PostgreSQL, whose text cannot hold U+0000
@example(
    upload=(
        _part(b"purpose", None, b"batch", b"")
        + _part(b"file", b"a\x00b.jsonl", FILE_BYTES, b"")
        + f"--{BOUNDARY}--\r\n".encode(),
        f"multipart/form-data; boundary={BOUNDARY}".encode(),
    )
)
def test_multipart_uploads(api: BatchApi, upload: tuple[bytes, bytes]) -> None:
    body, content_type = upload
    headers = {"content-type": content_type} if content_type else {}
    status, doc = api.send("POST", "/v1/files", content=body, headers=headers)
    if status == 200:
        assert doc["object"] == "file" and doc["purpose"] == "batch"
        assert api.send("GET", f"/v1/files/{doc['id']}")[0] == 200


# ---- batch bodies ---------------------------------------------------------------------------

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "input_file_id": st.one_of(
        st.sampled_from(["theirs", "file-nope", "", "a\x00b"]), odd_ids, json_values
    ),
    "endpoint": st.one_of(
        st.sampled_from(
            ["/v1/embeddings", "/v1/responses", "/v1/completions", "/v1/chat/completions/", ""]
        ),
        json_values,
    ),
    "completion_window": st.one_of(st.sampled_from(["24h", "1h", "48h", "24H", ""]), json_values),
    "metadata": st.one_of(st.dictionaries(odd_text, st.one_of(odd_text, json_values)), json_values),
    "output_expires_after": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "anchor": st.one_of(st.sampled_from(["created_at", "now"]), json_values),
                "seconds": st.one_of(
                    st.sampled_from([3600, 2592000, 60, 10**30, "3600", "²", 3600.0]),
                    repeated("9", 5000),
                    json_values,
                ),
            },
        ),
        json_values,
    ),
    "a_field_from_the_future": json_values,
}


@st.composite
def batch_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with one to three of its fields set to anything."""
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True))
    body: dict[str, Any] = {
        "input_file_id": "mine",
        "endpoint": ENDPOINT,
        "completion_window": "24h",
    }
    for name in names:
        body[name] = draw(FIELDS[name])
    return body


@fuzz(150)
@given(body=batch_bodies())
@example(  # a 500 before: '²' passes str.isdigit but not int()
    body={
        "input_file_id": "mine",
        "endpoint": ENDPOINT,
        "completion_window": "24h",
        "output_expires_after": {"anchor": "created_at", "seconds": "²"},
    }
)
@example(  # a 500 on PostgreSQL
    body={"input_file_id": "a\x00b", "endpoint": ENDPOINT, "completion_window": "24h"}
)
def test_batch_create_bodies(api: BatchApi, files: dict[str, str], body: dict[str, Any]) -> None:
    # "mine" and "theirs" stand for the uploaded files' ids
    if isinstance(body["input_file_id"], str):
        body["input_file_id"] = files.get(body["input_file_id"], body["input_file_id"])
    status, doc = api.create(body)
    if body["input_file_id"] == files["theirs"]:
        assert status in (400, 404)  # another key's file does not exist for this one
    if status == 200:
        assert doc["object"] == "batch"
        status, _ = api.send("POST", f"/v1/batches/{doc['id']}/cancel")
        assert status in (200, 409)


not_json = st.one_of(
    st.binary(max_size=100),
    st.sampled_from(
        [b"", b"null", b"[]", b'"x"', b"1e999", b"NaN", b'{"input_file_id": '],
    ),
    repeated(b"[", 100_000),
)


@fuzz(40)
@given(body=not_json)
def test_batch_bodies_that_are_not_json_objects(api: BatchApi, body: bytes) -> None:
    status, _ = api.create(body)
    assert status == 400


# ---- ids and query parameters ---------------------------------------------------------------

PATHS = [
    ("GET", "/v1/files/{}"),
    ("GET", "/v1/files/{}/content"),
    ("DELETE", "/v1/files/{}"),
    ("GET", "/v1/batches/{}"),
    ("POST", "/v1/batches/{}/cancel"),
    ("GET", "/v1/batches/{}/x"),
    ("PUT", "/v1/files/{}"),
]
query_values = st.one_of(
    odd_text,
    st.sampled_from(["1", "100", "101", "10000", "0", "-1", "asc", "desc"]),
    repeated("9", 5000),
)


@fuzz(200)
@given(
    call=st.sampled_from(PATHS),
    # mostly one path segment: a '/' (or '%2F', which the server decodes) makes another
    odd=st.one_of(odd_ids.map(lambda s: s.replace("/", "").replace("%2F", "")), odd_ids),
    raw=st.booleans(),
)
# each a 500 on PostgreSQL, whose text cannot hold U+0000
@example(call=("GET", "/v1/files/{}"), odd="a\x00b", raw=False)
@example(call=("GET", "/v1/files/{}/content"), odd="%00", raw=True)
@example(call=("DELETE", "/v1/files/{}"), odd="a\x00b", raw=False)
@example(call=("GET", "/v1/batches/{}"), odd="a\x00b", raw=False)
@example(call=("POST", "/v1/batches/{}/cancel"), odd="a\x00b", raw=False)
def test_odd_ids(api: BatchApi, call: tuple[str, str], odd: str, raw: bool) -> None:
    method, template = call
    # percent-encoded as a client should, or with '/', '.' and '%' as typed ('../', '%00')
    status, _ = api.send(method, template.format(quote(odd, safe="/.%" if raw else "")))
    assert status != 200 or method == "GET"  # nothing of this key's can be deleted or cancelled


@fuzz(150)
@given(
    path=st.sampled_from(["/v1/files", "/v1/batches"]),
    query=st.dictionaries(
        st.sampled_from(["limit", "after", "order", "purpose", "limit[]", "x"]),
        query_values,
        max_size=3,
    ),
)
@example(path="/v1/files", query={"after": "a\x00b"})  # each a 500 on PostgreSQL
@example(path="/v1/files", query={"purpose": "a\x00b"})
@example(path="/v1/batches", query={"after": "a\x00b"})
def test_list_query_parameters(api: BatchApi, path: str, query: dict[str, str]) -> None:
    status, doc = api.send("GET", path + "?" + urlencode(query))
    if status == 200:
        assert doc["object"] == "list" and isinstance(doc["data"], list)


# ---- input files ----------------------------------------------------------------------------

lines = st.one_of(
    st.builds(
        lambda custom_id, method, url, body: {
            "custom_id": custom_id,
            "method": method,
            "url": url,
            "body": body,
        },
        st.one_of(st.sampled_from(["a", "b", "a\x00"]), repeated("x", 600), odd_text, json_values),
        st.one_of(st.just("POST"), json_values),
        st.one_of(st.sampled_from([ENDPOINT, "/v1/embeddings", "/v1/nope"]), json_values),
        st.one_of(
            st.fixed_dictionaries(
                {"model": st.one_of(st.sampled_from(["m-chat", "e-embed", "m-nope"]), json_values)},
                optional={
                    "messages": st.one_of(
                        st.just([{"role": "user", "content": "hi"}]), json_values
                    ),
                    "stream": json_values,
                    "max_tokens": json_values,
                },
            ),
            json_values,
        ),
    ),
    json_values,
)


@fuzz(30)
@given(
    content=st.lists(st.one_of(lines.map(json.dumps), odd_text), min_size=0, max_size=4).map(
        lambda rows: "\n".join(rows).encode()
    )
)
# the batch never left `validating` on PostgreSQL: its lines could not be stored
@example(content=jsonl([chat_line("a\x00", "hi")]))
def test_input_files_with_odd_lines(api: BatchApi, content: bytes) -> None:
    status, doc = api.send(
        "POST", "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )
    if status != 200:
        assert not content  # only an empty file is refused at upload
        return
    status, batch = api.create(
        {"input_file_id": doc["id"], "endpoint": ENDPOINT, "completion_window": "24h"}
    )
    assert status == 200, batch
    settled = api.settled(batch["id"])
    assert settled["status"] in ("failed", "in_progress", "finalizing", "completed"), settled
    if settled["status"] == "failed":
        errors = settled["errors"]["data"]
        assert errors and all(e["message"] and e["code"] for e in errors)


def test_still_serving_after_the_fuzz(api: BatchApi, files: dict[str, str]) -> None:
    status, batch = api.create(
        {"input_file_id": files["mine"], "endpoint": ENDPOINT, "completion_window": "24h"}
    )
    assert status == 200
    assert api.settled(batch["id"])["status"] != "failed"
    assert api.send("GET", "/v1/files")[0] == 200
    api.stack.flush()
    api.watch.assert_clean()
