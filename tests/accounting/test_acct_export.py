"""Usage export: field order, formats, money and time formatting, `since`; from both backends."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.accounting.export import EXPORT_FIELDS, export, format_money, format_ts, parse_since
from tokenway.accounting.ledger import AttemptRow, RequestRow, open_ledger
from tokenway.domain.types import Usage

T0 = datetime(2026, 11, 28, 3, 22, 29, 123000, tzinfo=UTC).timestamp()

REQUIRED = [
    "request_id",
    "ts",
    "key",
    "model",
    "provider",
    "provider_model",
    "mode",
    "stream",
    "status",
    "attempts",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "revenue_usd",
    "ttft_ms",
    "latency_ms",
]


def row(i: int, ts: float, **kw: object) -> RequestRow:
    usage = Usage(input_tokens=100, cache_read_tokens=40, output_tokens=10, reasoning_tokens=2)
    attempt = AttemptRow(
        request_id=f"r{i}",
        seq=0,
        ts=ts,
        provider="openai",
        provider_model="gpt-4o-mini",
        status=200,
        flag="OK",
        usage=usage,
        cost_usd=Decimal("0.00000125"),
        latency_ms=40.0,
    )
    fields: dict[str, object] = dict(
        request_id=f"r{i}",
        ts=ts,
        key="app",
        model="chat-fast",
        provider="openai",
        provider_model="gpt-4o-mini",
        api="openai.chat",
        stream=True,
        status=200,
        flag="OK",
        usage=usage,
        cost_usd=Decimal("0.00000125"),
        revenue_usd=Decimal("0.0000025"),
        ttft_ms=12.5,
        latency_ms=40.0,
        attempts=[attempt],
    )
    fields.update(kw)
    return RequestRow(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def exported(ledger_url: str) -> str:
    """Three requests on a ledger of each backend (SQLite, PostgreSQL)."""
    url = ledger_url
    ledger = open_ledger(url)
    await ledger.start()
    ledger.record(row(1, T0))
    ledger.record(
        row(
            2,
            T0 + 3600,
            stream=False,
            mode="batch",
            status=502,
            flag="ALLFAILED",
            provider=None,
            provider_model=None,
            ttft_ms=None,
            attempts=[],
            cost_usd=Decimal(0),
            revenue_usd=Decimal(0),
        )
    )
    ledger.record(row(3, T0 + 7200, team="search"))
    await ledger.close()
    return url


def test_jsonl(exported: str) -> None:
    out = io.StringIO()
    assert export(exported, "jsonl", None, out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    first = lines[0]
    assert list(first)[: len(REQUIRED)] == REQUIRED
    assert list(first) == list(EXPORT_FIELDS)
    assert first["ts"] == "2026-11-28T03:22:29.123Z"
    assert first["cost_usd"] == "0.000001250" and first["revenue_usd"] == "0.000002500"
    assert (first["stream"], first["attempts"], first["input_tokens"]) == (True, 1, 100)
    assert (first["cache_read_tokens"], first["reasoning_tokens"], first["team"]) == (40, 2, None)
    failed = lines[1]
    assert (failed["mode"], failed["status"], failed["provider"], failed["attempts"]) == (
        "batch",
        502,
        None,
        0,
    )
    assert failed["cost_usd"] == "0.000000000" and failed["ttft_ms"] is None
    assert lines[2]["team"] == "search"


def test_csv(exported: str) -> None:
    out = io.StringIO()
    assert export(exported, "csv", None, out) == 3
    reader = csv.reader(io.StringIO(out.getvalue()))
    header = next(reader)
    assert header[: len(REQUIRED)] == REQUIRED
    records = [dict(zip(header, r, strict=True)) for r in reader]
    assert [r["request_id"] for r in records] == ["r1", "r2", "r3"]
    assert records[0]["stream"] == "true" and records[1]["stream"] == "false"
    assert records[0]["cost_usd"] == "0.000001250"
    assert records[1]["provider"] == "" and records[1]["ttft_ms"] == ""
    assert records[2]["ts"] == "2026-11-28T05:22:29.123Z"


def test_since_filters(exported: str) -> None:
    out = io.StringIO()
    since = datetime.fromtimestamp(T0 + 3600, UTC)
    assert export(exported, "jsonl", since, out) == 2
    assert [json.loads(x)["request_id"] for x in out.getvalue().splitlines()] == ["r2", "r3"]
    naive = datetime(2026, 11, 28, 5, 0)  # UTC
    assert export(exported, "csv", naive, io.StringIO()) == 1


def test_unknown_format_is_rejected(exported: str) -> None:
    with pytest.raises(ValueError, match="format"):
        export(exported, "xml", None, io.StringIO())  # type: ignore[arg-type]


def test_format_money_examples() -> None:
    assert format_money(Decimal("0.00000125")) == "0.000001250"
    assert format_money(Decimal(0)) == "0.000000000"
    assert format_money(Decimal("12")) == "12.000000000"
    assert format_money(Decimal("1E-12")) == "0.000000000001"
    assert format_money(Decimal("1E+30")) == "1" + "0" * 30 + ".000000000"


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**12), max_value=10**12))
def test_format_money_is_exact_with_nine_decimals(value: Decimal) -> None:
    text = format_money(value)
    assert Decimal(text) == value
    assert "E" not in text and len(text.partition(".")[2]) >= 9


def test_parse_since_forms() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_since("24h", now=now) == now - timedelta(hours=24)
    assert parse_since("7d", now=now) == now - timedelta(days=7)
    assert parse_since("30m", now=now) == now - timedelta(minutes=30)
    assert parse_since("1.5h", now=now) == now - timedelta(minutes=90)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-28T03:22:29.123Z") == datetime.fromtimestamp(T0, UTC)
    assert parse_since("2026-11-28T08:00:00+08:00") == datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    assert parse_since("2026-11-28T08:00:00").tzinfo is not None
    recent = parse_since("1h")
    assert timedelta(minutes=59) < datetime.now(UTC) - recent < timedelta(minutes=61)


@pytest.mark.parametrize("bad", ["", "yesterday", "24", "h", "2026-13-01", "7y"])
def test_parse_since_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="since"):
        parse_since(bad)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_format_ts_round_trips_at_millisecond_precision(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=UTC)
    text = format_ts(moment.timestamp())
    assert text.endswith("Z") and len(text) == len("2026-11-28T03:22:29.123Z")
    assert parse_since(text) == moment


def test_format_ts_other_offsets() -> None:
    tz = timezone(timedelta(hours=-5))
    assert (
        format_ts(datetime(2026, 1, 1, 19, 0, tzinfo=tz).timestamp()) == "2026-01-02T00:00:00.000Z"
    )
