"""Headroom: what providers' rate-limit headers and 429s say, and configured rpm/tpm budgets."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.routing.headroom import Headroom, go_duration_s

LABEL, PROVIDER = "openai/gpt-4o-mini", "openai"
WALL = 1_700_000_000.0  # the wall clock's start: 2023-11-14T22:13:20Z


class Clock:
    """A clock that moves only when told."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Clocks:
    """A monotonic and a wall clock that move together."""

    def __init__(self) -> None:
        self.mono, self.wall = Clock(50.0), Clock(WALL)

    def advance(self, seconds: float) -> None:
        self.mono.now += seconds
        self.wall.now += seconds


@pytest.fixture()
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture()
def room(clocks: Clocks) -> Headroom:
    return Headroom(clock=clocks.mono, wall=clocks.wall)


def rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat().replace("+00:00", "Z")


# go_duration_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m2.5s", 62.5),
        ("120ms", 0.12),
        ("6m0s", 360.0),
        ("1h0m0s", 3600.0),
        ("2h30m", 9000.0),
        ("0s", 0.0),
        ("500\u00b5s", 0.0005),
        ("500us", 0.0005),
        ("7ns", 7e-9),
        (" 20ms ", 0.02),
        ("3", 3.0),  # bare seconds, as some providers send
        ("1.5", 1.5),
    ],
)
def test_go_duration(text: str, seconds: float) -> None:
    assert go_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "1x", "-1s", "1s and more", "1m-2s", "ms", "s1"])
def test_go_duration_malformed_is_none(text: str) -> None:
    assert go_duration_s(text) is None


@given(st.text())
def test_go_duration_never_raises(text: str) -> None:
    out = go_duration_s(text)
    assert out is None or out >= 0.0


@given(
    st.integers(0, 99),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
    st.sets(st.sampled_from("hmsx"), min_size=1),
)
def test_go_duration_of_composed_parts(h: int, m: int, s: int, ms: int, show: set[str]) -> None:
    # Any subset of the parts, in Go's order, reads back as the sum of those parts.
    parts = [(f"{h}h", h * 3600), (f"{m}m", m * 60), (f"{s}s", s), (f"{ms}ms", ms / 1000)]
    chosen = [p for p, key in zip(parts, "hmsx", strict=True) if key in show]
    text = "".join(t for t, _ in chosen)
    assert go_duration_s(text) == pytest.approx(sum(v for _, v in chosen))


# OpenAI headers


@pytest.mark.parametrize(("reset", "seconds"), [("1m2.5s", 62.5), ("120ms", 0.12), ("20s", 20.0)])
def test_openai_requests_spent_block_until_reset(
    room: Headroom, clocks: Clocks, reset: str, seconds: float
) -> None:
    room.observe(
        LABEL,
        200,
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": reset},
    )
    assert room.wait_s(LABEL, PROVIDER, 10) == pytest.approx(seconds)
    assert room.wait_s("openai/other", PROVIDER, 10) == 0.0, "only this target is spent"
    clocks.advance(seconds * 0.99)
    assert room.wait_s(LABEL, PROVIDER, 10) > 0
    clocks.advance(seconds * 0.02)
    assert room.wait_s(LABEL, PROVIDER, 10) == 0.0


def test_a_far_reset_blocks_at_most_two_minutes(room: Headroom) -> None:
    room.observe(
        LABEL, 200, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    )
    assert room.wait_s(LABEL, PROVIDER, 10) == pytest.approx(120.0)


def test_requests_left_do_not_block(room: Headroom) -> None:
    room.observe(
        LABEL, 200, {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "6m0s"}
    )
    assert room.wait_s(LABEL, PROVIDER, 10) == 0.0


def test_spent_without_a_reset_waits_a_default_second(room: Headroom) -> None:
    room.observe(LABEL, 200, {"x-ratelimit-remaining-requests": "0"})
    assert room.wait_s(LABEL, PROVIDER, 10) == pytest.approx(1.0)


def test_openai_tokens_left_block_only_bigger_requests(room: Headroom, clocks: Clocks) -> None:
    room.observe(
        LABEL, 200, {"x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "6s"}
    )
    assert room.wait_s(LABEL, PROVIDER, 1000) == 0.0
    assert room.wait_s(LABEL, PROVIDER, 1001) == pytest.approx(6.0)
    clocks.advance(6.0)
    assert room.wait_s(LABEL, PROVIDER, 50_000) == 0.0


def test_openai_tokens_spent_block_everything(room: Headroom) -> None:
    room.observe(
        LABEL, 200, {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "250ms"}
    )
    assert room.wait_s(LABEL, PROVIDER, 0) == pytest.approx(0.25)


@pytest.mark.parametrize("reset", ["1000h", "inf", "1e400"])
def test_a_far_tokens_reset_is_capped_too(room: Headroom, clocks: Clocks, reset: str) -> None:
    room.observe(
        LABEL, 200, {"x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": reset}
    )
    assert room.wait_s(LABEL, PROVIDER, 100) == pytest.approx(120.0)
    clocks.advance(120.0)
    assert room.wait_s(LABEL, PROVIDER, 100) == 0.0


# Anthropic headers (RFC 3339 instants on the wall clock)


def test_anthropic_requests_spent_block_until_the_instant(room: Headroom, clocks: Clocks) -> None:
    room.observe(
        LABEL,
        200,
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": rfc3339(WALL + 30),
        },
    )
    assert room.wait_s(LABEL, PROVIDER, 10) == pytest.approx(30.0)
    clocks.advance(30.0)
    assert room.wait_s(LABEL, PROVIDER, 10) == 0.0


def test_anthropic_instant_with_offset(room: Headroom) -> None:
    # 22:13:50 UTC written in UTC+02:00.
    room.observe(
        LABEL,
        200,
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2023-11-15T00:13:50+02:00",
        },
    )
    assert room.wait_s(LABEL, PROVIDER, 10) == pytest.approx(30.0)


def test_anthropic_reset_in_the_past_does_not_block(room: Headroom) -> None:
    room.observe(
        LABEL,
        200,
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": rfc3339(WALL - 30),
        },
    )
    assert room.wait_s(LABEL, PROVIDER, 10) == 0.0


def test_anthropic_tokens_left_block_only_bigger_requests(room: Headroom, clocks: Clocks) -> None:
    room.observe(
        LABEL,
        200,
        {
            "anthropic-ratelimit-tokens-remaining": "4000",
            "anthropic-ratelimit-tokens-reset": rfc3339(WALL + 12),
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": rfc3339(WALL + 1),
        },
    )
    assert room.wait_s(LABEL, PROVIDER, 3999) == 0.0
    assert room.wait_s(LABEL, PROVIDER, 4001) == pytest.approx(12.0)
    clocks.advance(12.0)
    assert room.wait_s(LABEL, PROVIDER, 4001) == 0.0


def test_malformed_anthropic_instant_waits_the_default(room: Headroom) -> None:
    room.observe(
        LABEL,
        200,
        {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "Tomorrow",
        },
    )
    assert room.wait_s(LABEL, PROVIDER, 10) == pytest.approx(1.0)


# 429 answers


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # ms is the more precise
        ({}, 1.0),
        ({"retry-after": "3600"}, 120.0),
    ],
)
def test_429_blocks_for_retry_after(
    room: Headroom, clocks: Clocks, headers: dict[str, str], seconds: float
) -> None:
    room.observe(LABEL, 429, headers)
    assert room.wait_s(LABEL, PROVIDER, 1) == pytest.approx(seconds)
    clocks.advance(seconds)
    assert room.wait_s(LABEL, PROVIDER, 1) == 0.0


def test_429_takes_the_later_of_retry_after_and_reset(room: Headroom) -> None:
    room.observe(
        LABEL,
        429,
        {
            "retry-after": "2",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "5s",
        },
    )
    assert room.wait_s(LABEL, PROVIDER, 1) == pytest.approx(5.0)


def test_retry_after_on_a_success_does_not_block(room: Headroom) -> None:
    room.observe(LABEL, 200, {"retry-after": "30"})
    assert room.wait_s(LABEL, PROVIDER, 1) == 0.0


def test_block_only_ever_extends(room: Headroom) -> None:
    room.block(LABEL, 5.0)
    room.block(LABEL, 2.0)
    assert room.wait_s(LABEL, PROVIDER, 1) == pytest.approx(5.0)
    room.block(LABEL, None)
    assert room.wait_s(LABEL, PROVIDER, 1) == pytest.approx(5.0)
    room.block(LABEL, -3.0)
    assert room.wait_s(LABEL, PROVIDER, 1) == pytest.approx(5.0)


# Configured budgets: a sliding minute


def test_provider_rpm_is_shared_by_its_targets(room: Headroom, clocks: Clocks) -> None:
    room.configure(PROVIDER, rpm=2, tpm=None)
    room.take("openai/a", PROVIDER, 10)
    clocks.advance(10.0)
    room.take("openai/b", PROVIDER, 10)
    for label in ("openai/a", "openai/b", "openai/c"):
        assert room.wait_s(label, PROVIDER, 10) == pytest.approx(50.0)
    assert room.wait_s("other/a", "other", 10) == 0.0
    clocks.advance(50.0)  # the first request leaves the minute
    assert room.wait_s("openai/c", PROVIDER, 10) == 0.0


def test_target_rpm_is_its_own(room: Headroom, clocks: Clocks) -> None:
    room.configure("openai/a", rpm=1, tpm=None)
    room.take("openai/a", PROVIDER, 10)
    room.take("openai/b", PROVIDER, 10)
    assert room.wait_s("openai/a", PROVIDER, 10) == pytest.approx(60.0)
    assert room.wait_s("openai/b", PROVIDER, 10) == 0.0
    clocks.advance(60.0)
    assert room.wait_s("openai/a", PROVIDER, 10) == 0.0


def test_tpm_blocks_what_would_pass_it(room: Headroom, clocks: Clocks) -> None:
    room.configure(PROVIDER, rpm=None, tpm=1000)
    room.take(LABEL, PROVIDER, 600)
    assert room.wait_s(LABEL, PROVIDER, 400) == 0.0
    assert room.wait_s(LABEL, PROVIDER, 401) == pytest.approx(60.0)
    clocks.advance(30.0)
    room.take(LABEL, PROVIDER, 400)
    clocks.advance(30.0)  # the 600 leave the minute; the 400 stay
    assert room.wait_s(LABEL, PROVIDER, 600) == 0.0
    assert room.wait_s(LABEL, PROVIDER, 601) == pytest.approx(30.0)


def test_an_idle_window_takes_one_request_over_tpm(room: Headroom) -> None:
    # Else a request bigger than the whole budget could never be sent.
    room.configure(PROVIDER, rpm=None, tpm=1000)
    assert room.wait_s(LABEL, PROVIDER, 5000) == 0.0


def test_both_budgets_bind(room: Headroom) -> None:
    room.configure(PROVIDER, rpm=100, tpm=None)
    room.configure(LABEL, rpm=None, tpm=100)
    room.take(LABEL, PROVIDER, 80)
    assert room.wait_s(LABEL, PROVIDER, 30) > 0
    assert room.wait_s("openai/b", PROVIDER, 30) == 0.0


def test_configure_without_limits_is_no_budget(room: Headroom) -> None:
    room.configure(PROVIDER, rpm=None, tpm=None)
    for _ in range(1000):
        room.take(LABEL, PROVIDER, 10**6)
    assert room.wait_s(LABEL, PROVIDER, 10**6) == 0.0


# Whatever a provider sends, observing it never raises


_HEADER_NAMES = [
    f"{prefix}{name}"
    for prefix, names in (
        (
            "x-ratelimit-",
            ["remaining-requests", "reset-requests", "remaining-tokens", "reset-tokens"],
        ),
        (
            "anthropic-ratelimit-",
            ["requests-remaining", "requests-reset", "tokens-remaining", "tokens-reset"],
        ),
        ("", ["retry-after", "retry-after-ms"]),
    )
    for name in names
]
_ODD_VALUES = [
    "0",
    "-1",
    "1e400",
    "inf",
    "-inf",
    "nan",
    "1.5",
    "9" * 400,
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+14:00",
    "2023-11-14T22:13:50.123456+00:00",
    "T",
    "1h2m3.5s",
    "",
    " ",
]


@given(
    st.dictionaries(
        st.sampled_from(_HEADER_NAMES) | st.text(max_size=20),
        st.sampled_from(_ODD_VALUES) | st.text(max_size=30),
    ),
    st.sampled_from([200, 400, 429, 500, 529]),
    st.integers(0, 10**7),
)
def test_observe_never_raises(headers: dict[str, str], status: int, tokens: int) -> None:
    clocks = Clocks()
    room = Headroom(clock=clocks.mono, wall=clocks.wall)
    room.observe(LABEL, status, headers)
    wait = room.wait_s(LABEL, PROVIDER, tokens)
    assert 0.0 <= wait <= 120.0 and not math.isnan(wait)
