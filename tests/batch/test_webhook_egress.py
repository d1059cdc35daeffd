"""Webhooks reach public addresses only (unless `async.webhook_private`): an IP literal that is
not public is refused when the task is submitted, and a name that resolves to one is refused
when the delivery connects, so that no key can make the gateway call into its own network."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.stack import Stack
from tokenway.batch.egress import PublicResolver, is_public, private_literal

from .conftest import module_stack, stack_doc
from .test_async import CHAT, Receiver, get_task, submit

SECRET = "whsec-egress-0123456789abcdef"


def _doc(ledger: Path) -> dict[str, Any]:
    doc = stack_doc(ledger)
    doc["async"] = {"webhook_secret": SECRET, "webhook_attempts": 1, "webhook_timeout_s": 2}
    return doc


stack = module_stack(_doc, "egress")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://[::1]:8080/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
    ],
)
def test_a_private_literal_is_refused_at_submission(client: openai.OpenAI, url: str) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        submit(client, CHAT, **{"x-tokenway-webhook": url})
    assert bad.value.param == "x-tokenway-webhook"
    assert "public" in bad.value.message


def test_a_name_that_resolves_to_loopback_is_refused_on_delivery(
    stack: Stack, client: openai.OpenAI
) -> None:
    receiver = Receiver(failures=0)
    stack.run(receiver.start())
    try:
        url = receiver.url.replace("127.0.0.1", "localhost")
        task = submit(client, CHAT, **{"x-tokenway-webhook": url}).json()
        end = time.monotonic() + 30
        seen = get_task(client, task["id"])
        while seen["webhook"]["status"] != "failed":
            assert time.monotonic() < end, seen["webhook"]
            time.sleep(0.05)
            seen = get_task(client, task["id"])
    finally:
        stack.run(receiver.stop())
    assert seen["status"] == "completed"  # the task itself ran
    assert receiver.got == []  # and nothing reached the loopback receiver
    assert seen["webhook"]["attempts"] == 1 and seen["webhook"]["last_error"]


def test_public_addresses_pass() -> None:
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        assert is_public(address) and not private_literal(address)
    assert not private_literal("example.com")  # names are judged by what they resolve to

    async def resolve_localhost() -> None:
        resolver = PublicResolver()
        try:
            await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    with pytest.raises(OSError, match="no public address"):
        asyncio.run(resolve_localhost())


@given(st.ip_addresses())
def test_any_address_is_private_or_public_never_both(ip: Any) -> None:
    text = str(ip)
    assert private_literal(text) is not is_public(text)
    assert private_literal(f"[{text}]") is not is_public(text)
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast:
        assert not is_public(text)
