"""Stored responses through the gateway: retrieve, delete, input items, keys, store=false,
retention, and the same conversation state on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from tests.e2e.stack import Stack

from .conftest import KEY, OTHER_KEY, stack_doc


def test_retrieve_returns_what_create_returned(client: openai.OpenAI) -> None:
    made = client.responses.create(model="m-openai", input="hi", metadata={"k": "v"})
    got = client.responses.retrieve(made.id)
    assert got.model_dump() == made.model_dump()


def test_streamed_response_is_stored_as_completed(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="m-gemini", input="hi", stream=True))
    final = events[-1].response
    got = client.responses.retrieve(final.id)
    assert got.status == "completed" and got.output_text == final.output_text
    assert got.usage == final.usage


def test_delete_then_gone(client: openai.OpenAI, stack: Stack) -> None:
    made = client.responses.create(model="m-openai", input="hi")
    r = httpx.delete(
        f"{stack.url}/v1/responses/{made.id}", headers={"authorization": f"Bearer {KEY}"}
    )
    assert r.status_code == 200
    assert r.json() == {"id": made.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(made.id)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m-openai", input="more", previous_response_id=made.id)
    assert e.value.code == "previous_response_not_found"


def test_input_items_pagination(client: openai.OpenAI) -> None:
    made = client.responses.create(
        model="m-openai",
        input=[
            {"role": "developer", "content": "be kind"},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": [{"type": "input_text", "text": "three"}]},
        ],
    )
    newest = client.responses.input_items.list(made.id)
    assert [i.content[0].text for i in newest.data] == ["three", "two", "one", "be kind"]
    assert newest.has_more is False
    assert newest.first_id == newest.data[0].id and newest.last_id == newest.data[-1].id
    assert all(i.id.startswith("msg_") and i.status == "completed" for i in newest.data)
    page1 = client.responses.input_items.list(made.id, order="asc", limit=2)
    assert [i.content[0].text for i in page1.data] == ["be kind", "one"]
    assert page1.has_more is True
    page2 = client.responses.input_items.list(
        made.id, order="asc", limit=2, after=page1.data[-1].id
    )
    assert [i.content[0].text for i in page2.data] == ["two", "three"]
    assert page2.has_more is False
    # the SDK's auto-pagination walks every page
    walked = client.responses.input_items.list(made.id, order="asc", limit=1)
    assert [i.content[0].text for i in walked] == ["be kind", "one", "two", "three"]


def test_input_items_keep_client_ids_and_normalise_shapes(client: openai.OpenAI) -> None:
    made = client.responses.create(
        model="m-openai",
        input=[{"type": "message", "id": "msg_mine", "role": "user", "content": "hi"}],
    )
    [item] = client.responses.input_items.list(made.id).data
    assert item.id == "msg_mine" and item.type == "message"
    assert item.content[0].type == "input_text" and item.content[0].text == "hi"


def test_another_keys_response_does_not_exist(client: openai.OpenAI, other: openai.OpenAI) -> None:
    made = client.responses.create(model="m-openai", input="secret plans")
    with pytest.raises(openai.NotFoundError) as e:
        other.responses.retrieve(made.id)
    assert e.value.status_code == 404
    assert e.value.body == {  # OpenAI's error shape
        "message": f"Response with id '{made.id}' not found.",
        "type": "not_found_error",
        "param": "response_id",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(made.id)
    with pytest.raises(openai.BadRequestError) as bad:
        other.responses.create(model="m-openai", input="and?", previous_response_id=made.id)
    assert bad.value.code == "previous_response_not_found"
    # still there for its owner
    assert client.responses.retrieve(made.id).id == made.id


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    made = client.responses.create(model="m-anthropic", input="hi", store=False)
    assert made.store is False and made.status == "completed"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m-openai", input="more", previous_response_id=made.id)


def test_follow_up_to_an_unstored_chain_still_reads_the_stored_head(
    client: openai.OpenAI,
) -> None:
    first = client.responses.create(model="m-openai", input="Remember: blue.")
    second = client.responses.create(
        model="m-openai", input="And green.", previous_response_id=first.id, store=False
    )
    assert second.previous_response_id == first.id and second.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(second.id)


def test_retention_period_expires_stored_responses(stack: Stack, client: openai.OpenAI) -> None:
    made = client.responses.create(model="m-openai", input="hi")
    later = time.time() + 30 * 86400 + 60
    stack.rt.now = lambda: later
    try:
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(made.id)
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="m-openai", input="x", previous_response_id=made.id)
        # expired rows are deleted, not only hidden
        assert stack.rt.responses.purge() >= 1
    finally:
        stack.rt.now = time.time
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


@pytest.fixture
def pg_stack(pg_url: str) -> Iterator[Stack]:
    s = Stack(stack_doc(pg_url)).start()
    yield s
    s.stop()


def test_conversation_state_on_postgresql(pg_stack: Stack) -> None:
    with (
        openai.OpenAI(base_url=pg_stack.url + "/v1", api_key=KEY, max_retries=0) as c,
        openai.OpenAI(base_url=pg_stack.url + "/v1", api_key=OTHER_KEY, max_retries=0) as o,
    ):
        first = c.responses.create(model="m-anthropic", input="My name is Ada.")
        second = c.responses.create(
            model="m-anthropic", input="Name?", previous_response_id=first.id, stream=True
        )
        final = list(second)[-1].response
        assert final.status == "completed"
        sent = pg_stack.sims["s-anthropic"].received[-1].body["messages"]
        assert "My name is Ada." in str(sent) and first.output_text in str(sent)
        assert c.responses.retrieve(final.id).output_text == final.output_text
        items = c.responses.input_items.list(final.id, order="asc").data
        assert [i.type for i in items] == ["message", "message", "message"]
        with pytest.raises(openai.NotFoundError):
            o.responses.retrieve(first.id)
        c.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(first.id)
    assert pg_stack.rt.responses.db.dialect == "postgres"


@pytest.fixture
def down_stack(tmp_path: Path) -> Iterator[Stack]:
    # a PostgreSQL store nobody listens for: the ledger spools, the response store is down
    url = f"postgresql://nobody@127.0.0.1:9/none?schema=s&spool={tmp_path / 'spool'}"
    s = Stack(stack_doc(url)).start()
    yield s
    s.stop()


def test_store_down_still_answers_and_reads_are_503(down_stack: Stack) -> None:
    with openai.OpenAI(base_url=down_stack.url + "/v1", api_key=KEY, max_retries=0) as c:
        made = c.responses.create(model="m-openai", input="hi")  # delivered, though not stored
        assert made.status == "completed" and made.output_text
        with pytest.raises(openai.InternalServerError) as e:
            c.responses.retrieve(made.id)
        assert e.value.status_code == 503 and "store is unavailable" in e.value.message
        with pytest.raises(openai.InternalServerError):
            c.responses.create(model="m-openai", input="x", previous_response_id=made.id)
