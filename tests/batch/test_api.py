"""The Files and Batches endpoints: key scoping, pagination and OpenAI-shaped 4xx errors."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from tests.e2e.stack import Stack

from .conftest import KEY, chat_line, jsonl, upload, wait_done


def _batch(client: openai.OpenAI) -> str:
    return client.batches.create(
        input_file_id=upload(client, [chat_line("a", "hi")]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    ).id


def test_another_key_sees_nothing(client: openai.OpenAI, other: openai.OpenAI) -> None:
    file_id = upload(client, [chat_line("a", "hi")])
    batch_id = _batch(client)
    done = wait_done(client, batch_id)
    for call in (
        lambda: other.files.retrieve(file_id),
        lambda: other.files.content(file_id),
        lambda: other.files.content(done.output_file_id),
        lambda: other.files.delete(file_id),
        lambda: other.batches.retrieve(batch_id),
        lambda: other.batches.cancel(batch_id),
        lambda: other.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert batch_id not in {b.id for b in other.batches.list()}
    assert not {file_id, done.output_file_id} & {f.id for f in other.files.list()}
    # the owner still has all of it
    assert client.files.retrieve(file_id).id == file_id
    assert batch_id in {b.id for b in client.batches.list()}


def test_lists_page_with_limit_and_after(client: openai.OpenAI, other: openai.OpenAI) -> None:
    made = [_batch(other) for _ in range(3)]
    first = other.batches.list(limit=2)
    assert [b.id for b in first.data] == made[::-1][:2]  # newest first
    assert first.has_more
    rest = other.batches.list(limit=2, after=first.data[-1].id)
    assert [b.id for b in rest.data] == [made[0]] and not rest.has_more
    assert [b.id for b in other.batches.list(limit=2)] == made[::-1]  # the SDK follows pages
    files = other.files.list(order="asc", limit=1)
    assert len(files.data) == 1 and files.has_more
    everything = [f.id for f in other.files.list(order="asc")]
    assert everything[0] == files.data[0].id and len(everything) == len(set(everything)) >= 3


def test_files_are_retrieved_listed_and_deleted(client: openai.OpenAI) -> None:
    content = jsonl([chat_line("a", "hi")])
    made = client.files.create(
        file=("in.jsonl", content),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert made.object == "file" and made.bytes == len(content) and made.filename == "in.jsonl"
    assert made.purpose == "batch" and made.status == "processed"
    assert made.expires_at == made.created_at + 3600
    assert client.files.retrieve(made.id) == made
    assert client.files.content(made.id).content == content
    assert made.id in {f.id for f in client.files.list(purpose="batch")}
    assert made.id not in {f.id for f in client.files.list(purpose="batch_output")}
    deleted = client.files.delete(made.id)
    assert deleted.deleted and deleted.id == made.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)


@pytest.mark.parametrize(("purpose", "param"), [("fine-tune", "purpose"), ("bogus", "purpose")])
def test_only_batch_files_are_accepted(client: openai.OpenAI, purpose: str, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("x.jsonl", b"{}\n"), purpose=purpose)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == param and body["message"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"endpoint": "/v1/completions"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 60}},
            "output_expires_after.seconds",
        ),
    ],
)
def test_bad_batch_requests_are_400s_that_say_what_is_wrong(
    client: openai.OpenAI, change: dict[str, object], param: str
) -> None:
    args: dict[str, object] = {
        "input_file_id": upload(client, [chat_line("a", "hi")]),
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **change,
    }
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(**args)  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == param and body["message"]


def test_a_missing_input_file_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )


def test_malformed_http_gets_openai_errors(stack: Stack) -> None:
    auth = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=stack.url, timeout=30) as h:
        cases = [
            (h.post("/v1/files", json={"purpose": "batch"}, headers=auth), 400),
            (
                h.post(
                    "/v1/files",
                    content=b"--xyz\r\nbroken",
                    headers={**auth, "content-type": "multipart/form-data; boundary=xyz"},
                ),
                400,
            ),
            (h.post("/v1/files", files={"purpose": (None, "batch")}, headers=auth), 400),
            (h.post("/v1/batches", content=b"{not json", headers=auth), 400),
            (h.post("/v1/batches", json=[1, 2], headers=auth), 400),
            (h.get("/v1/batches?limit=0", headers=auth), 400),
            (h.get("/v1/batches?after=batch_nope", headers=auth), 404),
            (h.get("/v1/files?order=sideways", headers=auth), 400),
            (h.get("/v1/batches/batch_x/unknown", headers=auth), 404),
            (h.put("/v1/files", headers=auth), 404),
            (h.get("/v1/batches"), 401),
        ]
        for resp, status in cases:
            assert resp.status_code == status, resp.text
            error = resp.json()["error"]
            assert error["message"] and error["type"]
